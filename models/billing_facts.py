"""Billing facts messages need: the ``invoice_paid`` step condition (SQL, judged when a step is
due) and, per customer, what a dunning or offer message says (amount owed, due and cancel dates,
currency, offer code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, not_, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from models.customer_data import Customer, Invoice, PaymentMethod
from models.records import Assignment, Message

UNPAID = ("failed", "open")
GRACE_DAYS = 27
"""Days after a failed renewal before the subscription is canceled (the synthetic business's
grace period; a real team's billing system decides, and Stripe's default retry schedule is similar)."""


def card_added_clause(now: datetime) -> Any:
    """A payment method added after the customer's assignment to the outer ``messages`` row's
    experiment, by ``now`` (``unless: payment_method_updated``; part of ``invoice_paid``)."""
    return exists(
        select(col(PaymentMethod.id))
        .join(Assignment, col(Assignment.customer_id) == col(PaymentMethod.customer_id))
        .where(
            col(PaymentMethod.customer_id) == col(Message.customer_id),
            col(Assignment.experiment_id) == col(Message.experiment_id),
            col(PaymentMethod.created_at) > col(Assignment.assigned_at),
            col(PaymentMethod.created_at) <= now,
        )
    )


def invoice_paid_clause(now: datetime) -> Any:
    """``unless: invoice_paid``, correlated with the outer ``messages`` row: since the customer's
    assignment to the message's experiment an invoice of theirs was paid or a new payment method
    was added (by ``now``), or nothing is owed any more. Dunning stops the moment the problem is
    solved."""
    settled = exists(
        select(col(Invoice.id))
        .join(Assignment, col(Assignment.customer_id) == col(Invoice.customer_id))
        .where(
            col(Invoice.customer_id) == col(Message.customer_id),
            col(Assignment.experiment_id) == col(Message.experiment_id),
            col(Invoice.status) == "paid",
            col(Invoice.paid_at) > col(Assignment.assigned_at),
            col(Invoice.paid_at) <= now,
        )
    )
    new_card = card_added_clause(now)
    owed = exists(  # at ``now``: an invoice paid later was still owed then
        select(col(Invoice.id)).where(
            col(Invoice.customer_id) == col(Message.customer_id),
            col(Invoice.status) != "void",
            col(Invoice.due_at) <= now,
            or_(col(Invoice.paid_at).is_(None), col(Invoice.paid_at) > now),
        )
    )
    return or_(settled, new_card, not_(owed))


@dataclass(frozen=True)
class BillingFacts:
    currency: str
    amount_due_minor: int | None
    due_date: date | None
    cancel_date: date | None


def load_billing_facts(
    conn: Connection, customer_ids: Iterable[int], now: datetime
) -> dict[int, BillingFacts]:
    """Per customer: the billing currency and, if an invoice is unpaid at ``now``, the oldest
    unpaid one's amount and due date, and the day the grace period ends."""
    ids = sorted(set(customer_ids))
    currency: dict[int, str] = {
        int(cid): code
        for cid, code in conn.execute(
            select(col(Customer.id), col(Customer.currency)).where(col(Customer.id).in_(ids))
        )
    }
    oldest: dict[int, tuple[int, datetime]] = {}
    query = (
        select(col(Invoice.customer_id), col(Invoice.amount_cents), col(Invoice.due_at))
        .where(
            col(Invoice.customer_id).in_(ids),
            col(Invoice.status).in_(UNPAID),
            col(Invoice.due_at) <= now,
        )
        .order_by(col(Invoice.due_at).desc())
    )
    for cid, amount, due in conn.execute(query):
        oldest[cid] = (amount, due)  # descending order: the oldest one wins
    out = {}
    for cid in ids:
        amount, due = oldest.get(cid, (None, None))
        out[cid] = BillingFacts(
            currency=currency.get(cid) or "USD",
            amount_due_minor=amount,
            due_date=due.date() if due else None,
            cancel_date=(due + timedelta(days=GRACE_DAYS)).date() if due else None,
        )
    return out
