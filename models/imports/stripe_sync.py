"""``retain sync stripe``: customers, subscriptions, invoices and cards from Stripe's API into the
customer tables, incrementally.

Each resource is listed with ``created[gt]=<cursor>`` (only objects new since the last sync), the
cards of new customers are listed per customer, and changes to objects seen before (a canceled
subscription, a paid invoice, an updated card) come from the events created since the last sync.
Cursors live in ``sync_cursors`` and move in the same transaction as the data they cover, so a
sync that fails half-way resumes where the last good one ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.bulk import table
from models.imports.readers import Batch
from models.imports.run import ImportSummary, import_batches
from models.imports.settings import ImportSettings
from models.imports.stripe_api import PAGE, list_objects, list_payment_methods, make_client
from models.imports.stripe_objects import (
    API_MAPPINGS,
    Row,
    customer_row,
    invoice_row,
    payment_method_row,
    rows_table,
    subscription_row,
)
from models.imports.tables import SyncCursor

SOURCE = "stripe"
LISTED: dict[str, Callable[[dict[str, Any]], Row]] = {
    "customers": customer_row,
    "subscriptions": subscription_row,
    "invoices": invoice_row,
}
# Event types whose object is the new state of something Retain keeps, and which table it is.
EVENT_RESOURCES = {
    "customer.updated": "customers",
    "customer.subscription.updated": "subscriptions",
    "customer.subscription.deleted": "subscriptions",
    "customer.subscription.paused": "subscriptions",
    "customer.subscription.resumed": "subscriptions",
    "invoice.paid": "invoices",
    "invoice.payment_failed": "invoices",
    "invoice.voided": "invoices",
    "invoice.marked_uncollectible": "invoices",
    "payment_method.attached": "payment_methods",
    "payment_method.updated": "payment_methods",
    "customer.source.expiring": "payment_methods",
    "payment_method.automatically_updated": "payment_methods",
}
ORDER = ("customers", "subscriptions", "invoices", "payment_methods")
CHUNK = 5_000


class StripeKeyMissing(Exception):
    """No API key in the settings or the named Prefect Secret block."""


@dataclass(frozen=True)
class SyncSummary:
    imports: list[ImportSummary]
    events: int
    cursors: dict[str, int]


def api_key(settings: ImportSettings) -> str:
    """The restricted key: ``RETAIN_STRIPE_API_KEY``, else the Prefect Secret block named by
    ``RETAIN_STRIPE_SECRET_BLOCK``."""
    if settings.stripe_api_key is not None:
        return settings.stripe_api_key.get_secret_value()
    if settings.stripe_secret_block:
        from prefect.blocks.system import Secret  # only when a block is configured

        block: Any = Secret.load(settings.stripe_secret_block)
        return str(block.get())
    raise StripeKeyMissing(
        "no Stripe API key; set RETAIN_STRIPE_API_KEY to a restricted read-only key or "
        "RETAIN_STRIPE_SECRET_BLOCK to a Prefect Secret block holding one"
    )


def sync_stripe(
    engine: Engine,
    settings: ImportSettings,
    now: datetime | None = None,
    page_size: int = PAGE,
) -> SyncSummary:
    """One incremental sync (the first one reads everything), ``page_size`` objects per request."""
    now = now or datetime.now(UTC)
    client = make_client(api_key(settings), settings.stripe_api_base)
    cursors = read_cursors(engine)
    imports: list[ImportSummary] = []
    new_customers: list[str] = []
    for resource, to_row in LISTED.items():
        extra = {"status": "all"} if resource == "subscriptions" else None
        listing = list_objects(client, resource, cursors.get(resource), extra, page_size)
        summaries: list[ImportSummary] = []
        newest = cursors.get(resource)
        # Applied in chunks (bounded memory on a first sync); the cursor moves with the last one,
        # since Stripe lists newest first: a sync that fails half-way re-reads, idempotently.
        for chunk in _chunks(listing, CHUNK):
            if resource == "customers":
                new_customers += [obj["id"] for obj in chunk]
            newest = max([newest or 0, *(int(obj["created"]) for obj in chunk)])
            summaries += _apply(engine, resource, [to_row(o) for o in chunk], now, now, {})
        if newest is not None:
            _save_cursors(engine, {resource: newest}, now)
        imports += _combined(summaries)
    cards = [
        payment_method_row(card)
        for customer in new_customers
        for card in list_payment_methods(client, customer, page_size)
    ]
    imports += _apply(engine, "payment_methods", cards, now, now, {})
    events = 0
    if "events" in cursors:
        listed = list(
            list_objects(
                client, "events", cursors["events"], {"types": sorted(EVENT_RESOURCES)}, page_size
            )
        )
        events = len(listed)
        latest = max((int(e["created"]) for e in listed), default=cursors["events"])
        by_resource = _latest_states(listed)
        for resource in ORDER:
            rows, versions = by_resource.get(resource, ([], []))
            moved = {"events": latest} if resource == ORDER[-1] else {}
            imports += _apply(engine, resource, rows, now, versions, moved)
    else:
        # The first sync read everything; changes from now on come as events.
        _save_cursors(engine, {"events": int(now.timestamp())}, now)
    return SyncSummary(imports, events, read_cursors(engine))


def _chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _combined(summaries: list[ImportSummary]) -> list[ImportSummary]:
    """One summary per resource, however many chunks it took."""
    if len(summaries) <= 1:
        return summaries
    first = summaries[0]
    return [
        replace(
            first,
            rows=sum(s.rows for s in summaries),
            inserted=sum(s.inserted for s in summaries),
            updated=sum(s.updated for s in summaries),
            unchanged=sum(s.unchanged for s in summaries),
            suppressions=sum(s.suppressions for s in summaries),
            rejects=[r for s in summaries for r in s.rejects],
        )
    ]


def _latest_states(events: list[dict[str, Any]]) -> dict[str, tuple[list[Row], list[datetime]]]:
    """Per table, the newest state of each object among ``events`` and that event's time."""
    newest: dict[tuple[str, str], tuple[int, Row]] = {}
    for event in events:
        resource = EVENT_RESOURCES.get(event["type"])
        if resource is None:
            continue
        row = event_row(event)
        key = (resource, str(row["id"]))
        created = int(event["created"])
        if key not in newest or created >= newest[key][0]:
            newest[key] = (created, row)
    out: dict[str, tuple[list[Row], list[datetime]]] = {}
    for (resource, _), (created, row) in sorted(newest.items(), key=lambda kv: kv[1][0]):
        rows, versions = out.setdefault(resource, ([], []))
        rows.append(row)
        versions.append(datetime.fromtimestamp(created, UTC))
    return out


def event_row(event: dict[str, Any]) -> Row:
    """The flat row of an event's object, read as of the event."""
    obj = event["data"]["object"]
    kind = event["type"]
    created = int(event["created"])
    if kind.startswith("customer.subscription."):
        return subscription_row(obj, paused_at=created)
    if kind.startswith("invoice."):
        return invoice_row(obj, failed=kind == "invoice.payment_failed")
    if kind.startswith(("payment_method.", "customer.source.")):
        return payment_method_row(obj, created=created)
    return customer_row(obj)


def _apply(
    engine: Engine,
    resource: str,
    rows: list[Row],
    now: datetime,
    version: datetime | list[datetime],
    cursors: dict[str, int],
) -> list[ImportSummary]:
    if not rows:
        if cursors:
            _save_cursors(engine, cursors, now)
        return []
    mapping = API_MAPPINGS[resource]
    summary = import_batches(
        engine,
        [Batch(rows_table(rows, mapping), 1)],
        mapping,
        f"stripe:{resource}",
        None,
        None,
        now,
        version=version,
        on_commit=lambda connection: save_cursors(connection, cursors, now),
    )
    return [summary]


def read_cursors(engine: Engine) -> dict[str, int]:
    cursors = table(SyncCursor)
    with engine.connect() as connection:
        rows = connection.execute(
            select(cursors.c.resource, cursors.c.created_cursor).where(cursors.c.source == SOURCE)
        ).all()
    return {resource: int(value) for resource, value in rows}


def _save_cursors(engine: Engine, values: dict[str, int], now: datetime) -> None:
    with engine.begin() as connection:
        save_cursors(connection, values, now)


def save_cursors(connection: Connection, values: dict[str, int], now: datetime) -> None:
    """Move the named cursors forward (never back)."""
    cursors = table(SyncCursor)
    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    for resource, value in values.items():
        statement = module.insert(cursors).values(
            source=SOURCE, resource=resource, created_cursor=value, updated_at=now
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["source", "resource"],
                set_={"created_cursor": statement.excluded.created_cursor, "updated_at": now},
                where=statement.excluded.created_cursor > cursors.c.created_cursor,
            )
        )
