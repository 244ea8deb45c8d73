"""What an import can fill: per entity (customers, subscriptions, ...), the target fields, their
kind (how a source value is read), whether they are required, their defaults and vocabularies.

The mapping file maps source columns onto these fields; the converter reads values by kind; the
merge writes them. A ``ref`` field holds a parent's source id (a subscription's customer ``cus_...``)
and is resolved to the parent's row in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table
from sqlmodel import SQLModel

from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription

Kind = Literal[
    "text",
    "int",
    "amount",
    "timestamp",
    "bool",
    "choice",
    "email",
    "phone",
    "timezone",
    "code",
    "ref",
]
EntityName = Literal["customers", "subscriptions", "invoices", "payment_methods", "activity_events"]


@dataclass(frozen=True)
class TargetField:
    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    stage_only: bool = False  # read and staged, but not a column of the target table
    refers_to: EntityName | None = None


@dataclass(frozen=True)
class Entity:
    name: EntityName
    fields: tuple[TargetField, ...]

    @property
    def table(self) -> Table:
        return table(_MODELS[self.name])

    def field(self, name: str) -> TargetField | None:
        return next((f for f in self.fields if f.name == name), None)

    def max_length(self, name: str) -> int | None:
        column = self.table.c.get(name)
        return getattr(column.type, "length", None) if column is not None else None


_MODELS: dict[str, type[SQLModel]] = {
    "customers": Customer,
    "subscriptions": Subscription,
    "invoices": Invoice,
    "payment_methods": PaymentMethod,
    "activity_events": ActivityEvent,
}

SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "paused", "canceled")
INVOICE_STATUSES = ("paid", "open", "failed", "void")
INTERVALS = ("month", "quarter", "year")
ACTIVITY_KINDS = ("login", "feature_use", "milestone", "support_ticket")
MONTHS_PER_INTERVAL = {"month": 1, "quarter": 3, "year": 12}

_ID = TargetField("external_id", "text", required=True)
_CUSTOMER = TargetField("customer", "ref", required=True, stage_only=True, refers_to="customers")
# The currency of a row's amounts (how many decimals they have); before the amounts it scales.
_CURRENCY = TargetField("currency", "code", stage_only=True)

ENTITIES: dict[str, Entity] = {
    "customers": Entity(
        "customers",
        (
            _ID,
            TargetField("name", "text", default=""),
            TargetField("email", "email"),
            TargetField("country", "code", default="US"),  # before phone: its default region
            TargetField("phone", "phone"),
            TargetField("locale", "text", default="en"),
            TargetField("timezone", "timezone", default="UTC"),
            TargetField("currency", "code", default="USD"),
            TargetField("email_consent", "bool", default=False),
            TargetField("sms_consent", "bool", default=False),
            TargetField("created_at", "timestamp", required=True),
            TargetField("email_unsubscribed", "bool", default=False, stage_only=True),
            TargetField("sms_unsubscribed", "bool", default=False, stage_only=True),
        ),
    ),
    "subscriptions": Entity(
        "subscriptions",
        (
            _ID,
            _CUSTOMER,
            _CURRENCY,
            TargetField("plan", "text", required=True),
            TargetField("billing_interval", "choice", required=True, choices=INTERVALS),
            TargetField("mrr_cents", "amount", required=True),
            TargetField("status", "choice", required=True, choices=SUBSCRIPTION_STATUSES),
            TargetField("started_at", "timestamp", required=True),
            TargetField("current_period_end", "timestamp", required=True),
            TargetField("paused_at", "timestamp"),
            TargetField("canceled_at", "timestamp"),
            TargetField("cancel_reason", "text"),
        ),
    ),
    "invoices": Entity(
        "invoices",
        (
            _ID,
            _CUSTOMER,
            TargetField("subscription", "ref", stage_only=True, refers_to="subscriptions"),
            _CURRENCY,
            TargetField("amount_cents", "amount", required=True),
            TargetField("status", "choice", required=True, choices=INVOICE_STATUSES),
            TargetField("attempts", "int", default=1),
            TargetField("due_at", "timestamp", required=True),
            TargetField("paid_at", "timestamp"),
        ),
    ),
    "payment_methods": Entity(
        "payment_methods",
        (
            _ID,
            _CUSTOMER,
            TargetField("brand", "text", default="card"),
            TargetField("last4", "text", required=True),
            TargetField("exp_month", "int", required=True),
            TargetField("exp_year", "int", required=True),
            TargetField("is_default", "bool", default=True),
            TargetField("created_at", "timestamp", required=True),
        ),
    ),
    "activity_events": Entity(
        "activity_events",
        (
            TargetField("external_id", "text"),
            _CUSTOMER,
            TargetField("occurred_at", "timestamp", required=True),
            TargetField("kind", "choice", required=True, choices=ACTIVITY_KINDS),
            TargetField("name", "text"),
            TargetField("quantity", "int", default=1),
        ),
    ),
}
