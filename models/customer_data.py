"""Tables for the customer data Retain reads: customers, subscriptions, invoices, payment methods
and activity events.

In production these are loaded from the billing system and the product's event stream; in the
demo the synthetic business writes them. Money is stored in integer cents; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True, max_length=64)
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=16, description="E.164, e.g. +46701234567")
    locale: str = Field(default="en", max_length=16)
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone name")
    country: str = Field(default="US", max_length=2)
    currency: str = Field(
        default="USD",
        max_length=3,
        sa_column_kwargs={"server_default": "USD"},
        description="ISO 4217 code the customer is billed in; invoices' amounts are in it",
    )
    email_consent: bool = False
    sms_consent: bool = False
    created_at: datetime
    updated_at: datetime | None = Field(
        default=None, description="when an import, sync or webhook last inserted or changed the row"
    )


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str | None = Field(
        default=None,
        max_length=255,
        unique=True,
        description="the source system's id, e.g. sub_...",
    )
    customer_id: int = Field(foreign_key="customers.id", index=True)
    plan: str = Field(max_length=64)
    billing_interval: str = Field(max_length=16, description="month | quarter | year")
    mrr_cents: int
    status: str = Field(
        max_length=16, description="trialing | active | past_due | paused | canceled"
    )
    started_at: datetime
    current_period_end: datetime
    paused_at: datetime | None = None
    canceled_at: datetime | None = None
    cancel_reason: str | None = Field(default=None, max_length=64)
    previous_plan: str | None = Field(default=None, max_length=64)
    previous_mrr_cents: int | None = Field(
        default=None, description="MRR before the last plan change (a downgrade lowers it)"
    )
    previous_billing_interval: str | None = Field(
        default=None, max_length=16, description="interval before the last plan change"
    )
    plan_changed_at: datetime | None = None
    upcoming_invoice_at: datetime | None = Field(
        default=None,
        description="when the next renewal will be charged, as Stripe's invoice.upcoming announced",
    )
    upcoming_invoice_cents: int | None = Field(
        default=None, description="the announced renewal's amount due, in minor units"
    )
    updated_at: datetime | None = Field(
        default=None, description="when an import, sync or webhook last inserted or changed the row"
    )
    source_updated_at: datetime | None = Field(
        default=None, description="the source's version of the row (a Stripe event's time)"
    )


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str | None = Field(
        default=None, max_length=255, unique=True, description="the source system's id, e.g. in_..."
    )
    customer_id: int = Field(foreign_key="customers.id", index=True)
    subscription_id: int | None = Field(default=None, foreign_key="subscriptions.id")
    amount_cents: int
    status: str = Field(max_length=16, description="paid | open | failed | void")
    attempts: int = 1
    due_at: datetime
    paid_at: datetime | None = None
    updated_at: datetime | None = Field(
        default=None, description="when an import, sync or webhook last inserted or changed the row"
    )
    source_updated_at: datetime | None = Field(
        default=None, description="the source's version of the row (a Stripe event's time)"
    )


class PaymentMethod(SQLModel, table=True):
    __tablename__ = "payment_methods"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str | None = Field(
        default=None, max_length=255, unique=True, description="the source system's id, e.g. pm_..."
    )
    customer_id: int = Field(foreign_key="customers.id", index=True)
    brand: str = Field(default="visa", max_length=16)
    last4: str = Field(max_length=4)
    exp_month: int
    exp_year: int
    expires_on: date = Field(description="last day of the expiry month")
    is_default: bool = True
    created_at: datetime
    updated_at: datetime | None = Field(
        default=None, description="when an import, sync or webhook last inserted or changed the row"
    )
    source_updated_at: datetime | None = Field(
        default=None, description="the source's version of the row (a Stripe event's time)"
    )


class ActivityEvent(SQLModel, table=True):
    """One row per customer, kind and day (``quantity`` counts the events of that day)."""

    __tablename__ = "activity_events"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str | None = Field(
        default=None, max_length=255, unique=True, description="the source's event id, if imported"
    )
    customer_id: int = Field(foreign_key="customers.id", index=True)
    kind: str = Field(max_length=32, description="login | feature_use | milestone | support_ticket")
    name: str | None = Field(default=None, max_length=64)
    occurred_at: datetime = Field(index=True)
    quantity: int = 1
