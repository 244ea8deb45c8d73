"""``retain sync stripe``: customers, subscriptions, invoices and cards from Stripe's API into the
customer tables, incrementally.

Each resource is listed with ``created[gt]=<cursor>`` (only objects new since the last sync), the
cards of new customers are listed per customer, and changes to objects seen before (a canceled
subscription, a paid invoice, an updated card) come from the events created since the last sync.
Cards have no cursor of their own: a customer seen before whose cards or default card changed
(a card event, or ``customer.updated`` with a new default) has its cards listed again, which
also un-defaults a card it no longer has; ``invoice.upcoming`` events note the coming renewal.
Cursors live in ``sync_cursors`` and move in the same transaction as the data they cover, so a
sync that fails half-way resumes where the last good one ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.bulk import table
from models.customer_data import Customer, PaymentMethod, Subscription
from models.imports.currency import from_stripe
from models.imports.mapping import Mapping
from models.imports.readers import Batch
from models.imports.run import ImportSummary, import_batches
from models.imports.settings import ImportSettings
from models.imports.stripe_api import (
    PAGE,
    list_objects,
    list_payment_methods,
    make_client,
    retrieve_customer,
)
from models.imports.stripe_objects import (
    API_MAPPINGS,
    LISTED_CARDS,
    Row,
    customer_row,
    invoice_row,
    listed_cards,
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
# Events that change which cards a customer has or which is the default: its cards are re-read.
CARD_EVENTS = {
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "payment_method.automatically_updated",
    "customer.source.created",
    "customer.source.deleted",
    "customer.source.expiring",
    "customer.source.updated",
    "customer.updated",
}
EVENT_TYPES = sorted({*EVENT_RESOURCES, *CARD_EVENTS, "invoice.upcoming"})
EVENTS_KEPT_DAYS = 30  # Stripe lists the events of the last 30 days
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
    new_customers: dict[str, dict[str, Any]] = {}  # id -> the customer's default card settings
    for resource, to_row in LISTED.items():
        extra = {"status": "all"} if resource == "subscriptions" else None
        listing = list_objects(client, resource, cursors.get(resource), extra, page_size)
        summaries: list[ImportSummary] = []
        newest = cursors.get(resource)
        # Applied in chunks (bounded memory on a first sync); the cursor moves with the last one,
        # since Stripe lists newest first: a sync that fails half-way re-reads, idempotently.
        for chunk in _chunks(listing, CHUNK):
            if resource == "customers":
                new_customers.update((obj["id"], _card_settings(obj)) for obj in chunk)
            newest = max([newest or 0, *(int(obj["created"]) for obj in chunk)])
            summaries += _apply(engine, resource, [to_row(o) for o in chunk], now, now, {})
        if newest is not None:
            _save_cursors(engine, {resource: newest}, now)
        imports += _combined(summaries)
    cards, _ = _cards_of(client, new_customers, page_size)
    imports += _apply(engine, "payment_methods", cards, now, now, {}, LISTED_CARDS)
    events = 0
    if "events" in cursors:
        listed = list(
            list_objects(client, "events", cursors["events"], {"types": EVENT_TYPES}, page_size)
        )
        listed.sort(key=lambda e: (int(e["created"]), str(e["id"])))
        events = len(listed)
        latest = max((int(e["created"]) for e in listed), default=cursors["events"])
        by_resource = _latest_states(listed)
        for resource in ORDER:
            rows, versions = by_resource.get(resource, ([], []))
            imports += _apply(engine, resource, rows, now, versions, {})
        # Cards of customers seen before: every card event (attached, detached, updated,
        # expiring) or change of the default re-reads the customer's cards, so a card added or
        # removed between syncs is right even though the list of cards has no created cursor.
        # Events older than Stripe keeps them (30 days) are gone: then every customer's cards.
        last_read = cursors.get("events_read", cursors["events"])
        if now.timestamp() - last_read > EVENTS_KEPT_DAYS * 86_400:
            touched: dict[str, dict[str, Any] | None] = dict.fromkeys(_stripe_customers(engine))
        else:
            touched = _card_customers(listed)
        for customer in new_customers:
            touched.pop(customer, None)
        cards, listed_ids = _cards_of(client, touched, page_size)
        upcoming = [e for e in listed if e["type"] == "invoice.upcoming"]

        def finish(connection: Connection) -> None:
            _not_on_file(connection, listed_ids, now)
            for event in upcoming:
                note_upcoming(connection, event, now)
            # events_read: when events were last read, to know whether some may have expired.
            save_cursors(connection, {"events": latest, "events_read": int(now.timestamp())}, now)

        if cards:
            imports += _apply(engine, "payment_methods", cards, now, now, {}, LISTED_CARDS, finish)
        else:
            with engine.begin() as connection:
                finish(connection)
    else:
        # The first sync read everything; changes from now on come as events.
        _save_cursors(engine, {"events": int(now.timestamp())}, now)
    return SyncSummary(imports, events, read_cursors(engine))


def _card_settings(customer: dict[str, Any]) -> dict[str, Any]:
    """The part of a customer object that says which card is its default."""
    return {
        "invoice_settings": {
            "default_payment_method": (customer.get("invoice_settings") or {}).get(
                "default_payment_method"
            )
        },
        "default_source": customer.get("default_source"),
    }


def _card_customers(events: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Customers whose cards or default card changed, with their newest customer object when an
    event carried one (``customer.updated``), else None (read from the API when needed)."""
    out: dict[str, dict[str, Any] | None] = {}
    for event in events:  # oldest first
        kind, obj = event["type"], event["data"]["object"]
        if kind == "customer.updated":
            previous = event["data"].get("previous_attributes") or {}
            if {"invoice_settings", "default_source"} & set(previous):  # the default changed
                out[str(obj["id"])] = _card_settings(obj)
        elif kind in CARD_EVENTS:
            previous = event["data"].get("previous_attributes") or {}
            customer = obj.get("customer") or previous.get("customer")  # detached: previous
            if isinstance(customer, dict):
                customer = customer.get("id")
            if customer:
                out.setdefault(str(customer), None)
    return out


def _cards_of(
    client: Any, customers: dict[str, dict[str, Any]] | dict[str, dict[str, Any] | None], page: int
) -> tuple[list[Row], dict[str, list[str]]]:
    """Every card of ``customers`` as rows with ``is_default``, and the card ids per customer."""
    rows: list[Row] = []
    ids: dict[str, list[str]] = {}
    for customer, settings in customers.items():
        cards = list(list_payment_methods(client, customer, page))
        if cards and settings is None:
            settings = retrieve_customer(client, customer)
        rows += listed_cards(cards, settings)
        ids[customer] = [card["id"] for card in cards]
    return rows, ids


def _stripe_customers(engine: Engine) -> list[str]:
    customers = table(Customer)
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(customers.c.external_id).where(
                    customers.c.external_id.like("cus\\_%", escape="\\")
                )
            ).scalars()
        )


def _not_on_file(connection: Connection, listed: dict[str, list[str]], now: datetime) -> None:
    """A card no longer in its customer's list (detached, deleted) is no longer the default."""
    cards, customers = table(PaymentMethod), table(Customer)
    for customer, ids in listed.items():
        owner = select(customers.c.id).where(customers.c.external_id == customer).scalar_subquery()
        connection.execute(
            update(cards)
            .where(
                cards.c.customer_id == owner,
                cards.c.is_default.is_(True),
                cards.c.external_id.not_in(ids) if ids else true(),
            )
            .values(is_default=False, updated_at=now)
        )


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


def note_upcoming(
    connection: Connection, event: dict[str, Any], now: datetime
) -> tuple[str, str | None]:
    """``invoice.upcoming``: Stripe announces a subscription's renewal invoice days before it is
    charged. The invoice has no id yet, so it is not an invoice row: the subscription keeps the
    announced amount and charge time (``upcoming_invoice_cents``, ``upcoming_invoice_at``), which
    the rule field ``card_expires_before_next_charge`` reads. An announcement older than the one
    stored (a late delivery) changes nothing. Returns (outcome, subscription id)."""
    obj = event["data"]["object"]
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    subscription = obj.get("subscription") or parent.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    when = obj.get("next_payment_attempt") or obj.get("due_date") or obj.get("period_end")
    amount = obj.get("amount_due")
    if not subscription or not isinstance(when, int) or not isinstance(amount, int):
        return "ignored: an upcoming invoice without subscription, date or amount", None
    at = datetime.fromtimestamp(when, UTC)
    cents = from_stripe(amount, obj.get("currency"))
    subscriptions = table(Subscription)
    c = subscriptions.c
    changed = connection.execute(
        update(subscriptions)
        .where(
            c.external_id == str(subscription),
            or_(c.upcoming_invoice_at.is_(None), c.upcoming_invoice_at <= at),
            or_(
                c.upcoming_invoice_at.is_distinct_from(at),
                c.upcoming_invoice_cents.is_distinct_from(cents),
            ),
        )
        .values(upcoming_invoice_at=at, upcoming_invoice_cents=cents, updated_at=now)
    ).rowcount
    if changed:
        return f"applied: {subscription} renews {at:%Y-%m-%d %H:%M} UTC for {cents}", subscription
    known = connection.execute(select(c.id).where(c.external_id == str(subscription))).first()
    if known is None:
        return f"ignored: no subscription {subscription} in Retain yet", subscription
    return f"unchanged: {subscription} already has this or a later upcoming invoice", subscription


def _apply(
    engine: Engine,
    resource: str,
    rows: list[Row],
    now: datetime,
    version: datetime | list[datetime],
    cursors: dict[str, int],
    mapping: Mapping | None = None,
    finish: Callable[[Connection], None] | None = None,
) -> list[ImportSummary]:
    if not rows:
        if cursors:
            _save_cursors(engine, cursors, now)
        return []
    mapping = mapping or API_MAPPINGS[resource]

    def on_commit(connection: Connection) -> None:
        save_cursors(connection, cursors, now)
        if finish is not None:
            finish(connection)

    summary = import_batches(
        engine,
        [Batch(rows_table(rows, mapping), 1)],
        mapping,
        f"stripe:{resource}",
        None,
        None,
        now,
        version=version,
        on_commit=on_commit,
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
