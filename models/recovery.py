"""The demo's failed-payment recovery, written as a billing system would record it: the customer
adds a new card, the invoices they owed are paid at that moment and the subscription is active
again. Also what each customer owed at assignment, for the response model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from models.billing_facts import UNPAID
from models.bulk import table
from models.customer_data import Invoice, PaymentMethod, Subscription


def owed_cents(engine: Engine, customer_ids: Sequence[int], as_of: datetime) -> np.ndarray:
    """Per customer (in order), the sum of invoices due before ``as_of`` and unpaid."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(Invoice.customer_id), func.sum(col(Invoice.amount_cents)))
            .where(
                col(Invoice.customer_id).in_(list(customer_ids)),
                col(Invoice.status).in_(UNPAID),
                col(Invoice.due_at) < as_of,
            )
            .group_by(col(Invoice.customer_id))
        )
        owed: dict[int, int] = {int(c): int(total or 0) for c, total in rows}
    return np.array([int(owed.get(c) or 0) for c in customer_ids], dtype=np.int64)


def record_recoveries(connection: Connection, recoveries: Sequence[tuple[int, datetime]]) -> None:
    """Each ``(customer id, at)``: a new default card, owed invoices paid, subscription active."""
    from models.outcomes import _new_card  # the demo's card maker; imported late (cycle)

    ids = [c for c, _ in recoveries]
    connection.execute(
        update(PaymentMethod)
        .where(col(PaymentMethod.customer_id).in_(ids))
        .values(is_default=False)
    )
    connection.execute(table(PaymentMethod).insert(), [_new_card(c, at) for c, at in recoveries])
    invoices = table(Invoice)
    connection.execute(
        update(invoices)
        .where(
            invoices.c.customer_id == bindparam("cid"),
            or_(*(invoices.c.status == status for status in UNPAID)),  # no IN: executemany
            invoices.c.due_at < bindparam("at"),
        )
        .values(status="paid", paid_at=bindparam("at"), attempts=invoices.c.attempts + 1),
        [{"cid": c, "at": at} for c, at in recoveries],
    )
    subs = table(Subscription)
    connection.execute(
        update(subs)
        .where(subs.c.customer_id == bindparam("cid"), subs.c.status == "past_due")
        .values(status="active"),
        [{"cid": c} for c in ids],
    )
