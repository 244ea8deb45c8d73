"""Bulk-load the synthetic business into an empty database, streamed in blocks of customers.

The business is generated block by block (:func:`experiments.simulation.business.business_blocks`)
and converted to driver values by a worker thread, one chunk of rows ahead of the load
(:func:`prefetched`), so memory stays bounded by a block and two chunks whatever the number of
customers. Rows go in through the driver's own bulk path (:mod:`models.bulk`):
``executemany`` of prepared tuples on SQLite, ``COPY`` on PostgreSQL; SQLAlchemy's per-row
processing is skipped, so the values are converted here exactly as its types would store them
(timestamps in UTC, booleans, dates).

The tables' plain indexes are dropped for the load and built again at the end (a sort instead of
a B-tree insert per row); on PostgreSQL the foreign keys are added back at the end too (one
validating join instead of a trigger per row), and SQLite gets a larger page cache meanwhile. Ids are given explicitly: customer index ``i`` becomes customer id ``i + 1`` (its subscription the
same id), and every other table numbers its rows in order, so no id has to be read back. Everything
happens in one transaction: either the whole business is there or nothing is. The database's
statistics are refreshed (``ANALYZE``) at the end, so the planner knows the tables' new sizes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from experiments.simulation.business import (
    BLOCK,
    BusinessConfig,
    SyntheticBusiness,
    business_blocks,
)
from models.bulk import (
    Column,
    analyze,
    bulk_load,
    converted_chunks,
    foreign_keys_deferred,
    next_ids,
    reset_sequences,
    secondary_indexes_deferred,
    sqlite_cache,
    table,
)
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.db import redact
from models.records import Suppression

Progress = Callable[[str, int, int], None]
_TABLES = ("customers", "subscriptions", "invoices", "payment_methods", "activity_events")
_ALL_TABLES = (*_TABLES, "suppressions")


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
    engine: Engine,
    business: SyntheticBusiness | BusinessConfig,
    *,
    progress: Progress | None = None,
) -> SeedSummary:
    """Insert the synthetic business into the (empty) database behind ``engine``.

    Given a :class:`BusinessConfig`, the business is generated and loaded block by block (bounded
    memory); given a generated :class:`SyntheticBusiness`, it is loaded in the same blocks.
    Raises :class:`SeedError` if the ``customers`` table already holds rows; nothing is changed
    then. ``progress("customers", done, total)`` is called after each block.
    """
    report = progress or (lambda _stage, _done, _total: None)
    if isinstance(business, BusinessConfig):
        total, blocks = business.customers, business_blocks(business)
    else:
        total, blocks = len(business.customers), _slices(business, BLOCK)
    counts = dict.fromkeys(_ALL_TABLES, 0)
    with engine.begin() as connection:
        _refuse_if_seeded(engine, connection)
        first = {name: next_ids(connection, name) for name in _ALL_TABLES}
        report("customers", 0, total)
        with (
            sqlite_cache(connection),
            secondary_indexes_deferred(connection, _ALL_TABLES),
            foreign_keys_deferred(connection, _ALL_TABLES),
        ):
            work = _converted(blocks, first, connection.dialect.name)
            for name, rows, values in prefetched(work):
                if name == _BLOCK_DONE:
                    report("customers", counts["customers"], total)
                    continue
                bulk_load(connection, name, values)
                counts[name] += rows
        reset_sequences(connection, _ALL_TABLES)
        analyze(connection)
    return SeedSummary(**counts)


T = TypeVar("T")


def prefetched(items: Iterable[T]) -> Generator[T, None, None]:
    """``items``, with the next one made by a worker thread while the caller loads this one.

    Generating a block (numpy, which releases the GIL for much of its work) overlaps with the
    database taking the previous one; at most two blocks exist at once, so memory stays bounded.
    An exception in the worker is raised here.
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((True, item))
        except BaseException as error:  # handed to the consumer, which re-raises it
            ready.put((False, error))
            return
        ready.put((False, None))

    worker = threading.Thread(target=work, name="seed-blocks", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a worker waiting to put, then let it finish
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
        worker.join()


def _refuse_if_seeded(engine: Engine, connection: Connection) -> None:
    existing = connection.execute(select(func.count()).select_from(table(Customer))).scalar()
    if existing:
        raise SeedError(
            f"cannot seed {redact(engine.url.render_as_string(hide_password=False))}: its"
            f" customers table already holds {existing:,} rows; the synthetic business is only"
            " loaded into an empty database (use a new database or SQLite file)"
        )


Arrays = dict[str, npt.NDArray[Any]]
_BLOCK_DONE = ""


def _converted(
    blocks: Iterable[SyntheticBusiness], first: dict[str, int], dialect: str
) -> Iterator[tuple[str, int, dict[str, Column]]]:
    """(table, rows, driver values) chunk by chunk, then a block-done marker after each block."""
    done = dict.fromkeys(_ALL_TABLES, 0)
    for block in blocks:
        for name, columns in _rows(block, first, done).items():
            for values in converted_chunks(dialect, columns):
                rows = len(next(iter(values.values())))
                done[name] += rows
                yield name, rows, values
        yield _BLOCK_DONE, 0, {}


def _rows(b: SyntheticBusiness, first: dict[str, int], done: dict[str, int]) -> dict[str, Arrays]:
    """Column arrays per table for one block, with explicit ids and foreign keys."""

    def ids(name: str, n: int) -> npt.NDArray[np.int64]:
        return np.arange(n, dtype=np.int64) + first[name] + done[name]

    def customer(index: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return index + first["customers"]

    c, s, i, p, a, u = (
        b.customers,
        b.subscriptions,
        b.invoices,
        b.payment_methods,
        b.activity,
        b.suppressions,
    )
    customer_ids = ids("customers", len(c))
    subscription_of = first["subscriptions"] - first["customers"]  # one per customer, in order
    return {
        "customers": {
            "id": customer_ids,
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
        "subscriptions": {
            "id": ids("subscriptions", len(s)),
            "customer_id": customer(s.customer),
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
            "previous_mrr_cents": s.previous_mrr_cents,
            "previous_billing_interval": s.previous_billing_interval,
            "plan_changed_at": s.plan_changed_at,
        },
        "invoices": {
            "id": ids("invoices", len(i)),
            "customer_id": customer(i.customer),
            "subscription_id": customer(i.customer) + subscription_of,
            "amount_cents": i.amount_cents,
            "status": i.status,
            "attempts": i.attempts,
            "due_at": i.due_at,
            "paid_at": i.paid_at,
        },
        "payment_methods": {
            "id": ids("payment_methods", len(p)),
            "customer_id": customer(p.customer),
            "brand": p.brand,
            "last4": p.last4,
            "exp_month": p.exp_month,
            "exp_year": p.exp_year,
            "expires_on": p.expires_on,
            "is_default": p.is_default,
            "created_at": p.created_at,
        },
        "activity_events": {
            "id": ids("activity_events", len(a)),
            "customer_id": customer(a.customer),
            "kind": a.kind,
            "name": a.name,
            "occurred_at": a.occurred_at,
            "quantity": a.quantity,
        },
        "suppressions": {
            "id": ids("suppressions", len(u)),
            "customer_id": customer(u.customer),
            "channel": u.channel,
            "reason": u.reason,
            "source": u.source,
            "created_at": u.created_at,
        },
    }


def _slices(business: SyntheticBusiness, size: int) -> Iterator[SyntheticBusiness]:
    """A generated business cut into consecutive ranges of ``size`` customers (rows of every
    table are ordered by customer, so each range is a slice)."""
    n = len(business.customers)
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        parts: dict[str, Any] = {}
        for name in ("customers", "subscriptions", "latent"):
            parts[name] = _take(getattr(business, name), slice(lo, hi))
        for name in ("invoices", "payment_methods", "activity", "suppressions"):
            columns = getattr(business, name)
            start, stop = np.searchsorted(columns.customer, [lo, hi])
            parts[name] = _take(columns, slice(int(start), int(stop)))
        yield replace(business, **parts)


def _take(columns: Any, rows: slice) -> Any:
    return type(columns)(**{k: v[rows] for k, v in vars(columns).items()})


def customer_ids_by_index(engine: Engine, business: SyntheticBusiness) -> npt.NDArray[np.int64]:
    """Database id of every customer of ``business``, indexed by its 0-based customer index."""
    with engine.connect() as connection:
        return _customer_ids(connection, business.customers.external_id.tolist())


def _customer_ids(connection: Connection, wanted: Iterable[str]) -> npt.NDArray[np.int64]:
    customers = table(Customer)
    rows = connection.execute(select(customers.c.external_id, customers.c.id)).all()
    by_external = {external_id: id_ for external_id, id_ in rows}
    wanted = list(wanted)
    missing = [external_id for external_id in wanted if external_id not in by_external]
    if missing:
        raise SeedError(
            f"{len(missing):,} customers of the synthetic business are not in the database"
            f" (first: {missing[0]}); seed it with seed_business first"
        )
    return np.array([by_external[external_id] for external_id in wanted], dtype=np.int64)


# The tables the rows above fill, for checks that the names match the models.
MODELS = (Customer, Subscription, Invoice, PaymentMethod, ActivityEvent, Suppression)
