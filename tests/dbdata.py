"""Small hand-built customer data for database tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.customer_data import Customer, PaymentMethod, Subscription

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def add_customers(engine: Engine, count: int, *, card_days: int = 20, start: int = 0) -> list[int]:
    """``count`` active customers with consent, each with a card expiring in ``card_days`` days
    (after T0); numbered from ``start`` (``cus_000000``, ...)."""
    ids = []
    with Session(engine) as session:
        for i in range(start, start + count):
            customer = Customer(
                external_id=f"cus_{i:06d}",
                name=f"Customer {i}",
                email=f"c{i}@example.com",
                phone=f"+4670{i:07d}",
                locale="en",
                timezone="Europe/Stockholm",
                country="SE",
                email_consent=True,
                sms_consent=True,
                created_at=T0 - timedelta(days=200),
            )
            session.add(customer)
            session.flush()
            assert customer.id is not None
            ids.append(customer.id)
            expires = (T0 + timedelta(days=card_days)).date()
            session.add(
                Subscription(
                    customer_id=customer.id,
                    plan="team",
                    billing_interval="month",
                    mrr_cents=4900,
                    status="active",
                    started_at=T0 - timedelta(days=200),
                    current_period_end=T0 + timedelta(days=10),
                )
            )
            session.add(
                PaymentMethod(
                    customer_id=customer.id,
                    last4=f"{i % 10_000:04d}",
                    exp_month=expires.month,
                    exp_year=expires.year,
                    expires_on=date(expires.year, expires.month, expires.day),
                    created_at=T0 - timedelta(days=200),
                )
            )
        session.commit()
    return ids
