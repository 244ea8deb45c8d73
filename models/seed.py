"""Bulk-load a :class:`~experiments.simulation.business.SyntheticBusiness` into an empty database.

Rows go in with SQLAlchemy Core ``executemany`` in chunks, all in one transaction: either the
whole business is there or nothing is. Database ids of customers and subscriptions are read back
after their insert in one query each (customers by ``external_id``, subscriptions by customer),
never row by row. numpy values become Python values on the way; ``datetime64`` timestamps become
timezone-aware UTC datetimes, ``NaT`` becomes NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Connection, Engine

from experiments.simulation.business import SyntheticBusiness
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.db import analyze, redact
from models.records import Suppression

CHUNK = 10_000
Progress = Callable[[str, int, int], None]


class SeedError(RuntimeError):
    """The database cannot take the synthetic business (it is not empty, or ids do not match)."""


@dataclass(frozen=True)
class SeedSummary:
    """Rows inserted per table."""

    customers: int
    subscriptions: int
    invoices: int
    payment_methods: int
    activity_events: int
    suppressions: int


def seed_business(
    engine: Engine, business: SyntheticBusiness, *, progress: Progress | None = None
) -> SeedSummary:
    """Insert every table of ``business`` into the (empty) database behind ``engine``.

    Raises :class:`SeedError` if the ``customers`` table already holds rows; nothing is changed
    then. ``progress(stage, done, total)`` is called after each chunk (stage = table name).
    """
    report = progress or (lambda _stage, _done, _total: None)
    with engine.begin() as connection:
        existing = connection.execute(select(func.count()).select_from(table(Customer))).scalar()
        if existing:
            raise SeedError(
                f"cannot seed {redact(engine.url.render_as_string(hide_password=False))}: its"
                f" customers table already holds {existing:,} rows; the synthetic business is only"
                " loaded into an empty database (use a new database or SQLite file)"
            )
        c = business.customers
        _insert(
            connection,
            table(Customer),
            {
                "external_id": c.external_id,
                "name": c.name,
                "email": c.email,
                "phone": c.phone,
                "locale": c.locale,
                "timezone": c.timezone,
                "country": c.country,
                "email_consent": c.email_consent,
                "sms_consent": c.sms_consent,
                "created_at": c.created_at,
            },
            report,
        )
        customer_ids = _customer_ids(connection, business)
        s = business.subscriptions
        _insert(
            connection,
            table(Subscription),
            {
                "customer_id": customer_ids[s.customer],
                "plan": s.plan,
                "billing_interval": s.billing_interval,
                "mrr_cents": s.mrr_cents,
                "status": s.status,
                "started_at": s.started_at,
                "current_period_end": s.current_period_end,
                "paused_at": s.paused_at,
                "canceled_at": s.canceled_at,
                "cancel_reason": s.cancel_reason,
                "previous_plan": s.previous_plan,
                "plan_changed_at": s.plan_changed_at,
            },
            report,
        )
        subscription_ids = _subscription_ids(connection, customer_ids)
        i = business.invoices
        _insert(
            connection,
            table(Invoice),
            {
                "customer_id": customer_ids[i.customer],
                "subscription_id": subscription_ids[i.customer],
                "amount_cents": i.amount_cents,
                "status": i.status,
                "attempts": i.attempts,
                "due_at": i.due_at,
                "paid_at": i.paid_at,
            },
            report,
        )
        p = business.payment_methods
        _insert(
            connection,
            table(PaymentMethod),
            {
                "customer_id": customer_ids[p.customer],
                "brand": p.brand,
                "last4": p.last4,
                "exp_month": p.exp_month,
                "exp_year": p.exp_year,
                "expires_on": p.expires_on,
                "is_default": p.is_default,
                "created_at": p.created_at,
            },
            report,
        )
        a = business.activity
        _insert(
            connection,
            table(ActivityEvent),
            {
                "customer_id": customer_ids[a.customer],
                "kind": a.kind,
                "name": a.name,
                "occurred_at": a.occurred_at,
                "quantity": a.quantity,
            },
            report,
        )
        u = business.suppressions
        _insert(
            connection,
            table(Suppression),
            {
                "customer_id": customer_ids[u.customer],
                "channel": u.channel,
                "reason": u.reason,
                "source": u.source,
                "created_at": u.created_at,
            },
            report,
        )
    analyze(engine)
    return SeedSummary(len(c), len(s), len(i), len(p), len(a), len(u))


def customer_ids_by_index(engine: Engine, business: SyntheticBusiness) -> npt.NDArray[np.int64]:
    """Database id of every customer of ``business``, indexed by its 0-based customer index."""
    with engine.connect() as connection:
        return _customer_ids(connection, business)


def _customer_ids(connection: Connection, business: SyntheticBusiness) -> npt.NDArray[np.int64]:
    customers = table(Customer)
    rows = connection.execute(select(customers.c.external_id, customers.c.id)).all()
    by_external = {external_id: id_ for external_id, id_ in rows}
    wanted = business.customers.external_id.tolist()
    missing = [external_id for external_id in wanted if external_id not in by_external]
    if missing:
        raise SeedError(
            f"{len(missing):,} customers of the synthetic business are not in the database"
            f" (first: {missing[0]}); seed it with seed_business first"
        )
    return np.array([by_external[external_id] for external_id in wanted], dtype=np.int64)


def _subscription_ids(
    connection: Connection, customer_ids: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Subscription id per customer index (the business has exactly one per customer)."""
    subscriptions = table(Subscription)
    rows = connection.execute(select(subscriptions.c.customer_id, subscriptions.c.id)).all()
    by_customer = {customer_id: id_ for customer_id, id_ in rows}
    return np.array([by_customer[c] for c in customer_ids.tolist()], dtype=np.int64)


def _insert(
    connection: Connection,
    target: Table,
    columns: dict[str, np.ndarray[Any, Any]],
    report: Progress,
) -> None:
    """executemany of the rows made by zipping ``columns``, ``CHUNK`` rows at a time."""
    names = list(columns)
    values = [_python_values(column) for column in columns.values()]
    total = len(values[0])
    report(target.name, 0, total)
    for start in range(0, total, CHUNK):
        rows = [
            dict(zip(names, row, strict=True))
            for row in zip(*(v[start : start + CHUNK] for v in values), strict=True)
        ]
        connection.execute(insert(target), rows)
        report(target.name, min(start + CHUNK, total), total)


def _python_values(column: np.ndarray[Any, Any]) -> Sequence[Any]:
    """Plain Python values: ints, bools, strs, None, ``date`` and aware UTC ``datetime``."""
    if column.dtype.kind == "M":
        unit = np.datetime_data(column.dtype)[0]
        if unit == "D":
            return column.astype(object).tolist()  # datetime.date; NaT becomes None
        naive: list[datetime | None] = column.astype("datetime64[us]").astype(object).tolist()
        return [None if value is None else value.replace(tzinfo=UTC) for value in naive]
    return column.tolist()
