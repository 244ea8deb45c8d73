"""Stripe webhooks: verify the ``Stripe-Signature`` of the raw body, store each event once by its
id, and apply its object to the customer tables by the event's own time, so a late or repeated
delivery never overwrites a newer state.

:func:`stripe_webhook_route` is a Starlette route for ``POST /webhooks/stripe``, to mount in the
webhook app. Bad signatures and stale timestamps get 400 and change nothing; events Retain does
not use are stored and acknowledged (200), so Stripe stops retrying them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.bulk import table
from models.imports.readers import Batch
from models.imports.run import stage_and_merge
from models.imports.settings import ImportSettings
from models.imports.stripe_api import WebhookRejected, verify_event
from models.imports.stripe_objects import API_MAPPINGS, PAUSED_SUBSCRIPTIONS, rows_table
from models.imports.stripe_sync import event_row, note_upcoming
from models.imports.tables import StripeEvent

HANDLED = {
    "invoice.payment_failed": "invoices",
    "invoice.paid": "invoices",
    "customer.subscription.updated": "subscriptions",
    "customer.subscription.deleted": "subscriptions",
    "customer.subscription.paused": "subscriptions",
    "customer.subscription.resumed": "subscriptions",
    "customer.source.expiring": "payment_methods",
    "payment_method.automatically_updated": "payment_methods",
}


def stripe_webhook_route(
    engine_factory: Callable[[], Engine],
    secret: str | None = None,
    path: str = "/webhooks/stripe",
) -> Route:
    """A ``POST`` route receiving Stripe's events; ``secret`` defaults to
    ``RETAIN_STRIPE_WEBHOOK_SECRET``."""

    async def receive(request: Request) -> Response:
        key = secret
        if key is None:
            configured = ImportSettings().stripe_webhook_secret
            key = configured.get_secret_value() if configured else None
        if not key:
            # 500 makes Stripe retry later, once the secret is set; nothing is lost.
            return JSONResponse({"error": "RETAIN_STRIPE_WEBHOOK_SECRET is not set"}, 500)
        raw = await request.body()
        try:
            event = verify_event(raw, request.headers.get("stripe-signature"), key)
            _check_shape(event)
        except WebhookRejected as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        outcome = await run_in_threadpool(
            handle_event, engine_factory(), event, raw.decode("utf-8"), datetime.now(UTC)
        )
        return JSONResponse({"received": True, "outcome": outcome})

    return Route(path, receive, methods=["POST"], name="stripe_webhook")


def _check_shape(event: dict[str, Any]) -> None:
    try:
        assert isinstance(event["id"], str) and isinstance(event["type"], str)
        assert isinstance(event["created"], int) and isinstance(event["data"]["object"], dict)
    except (AssertionError, KeyError, TypeError):
        raise WebhookRejected(
            "signed, but not a Stripe event (id, type, created, data.object)"
        ) from None


def handle_event(engine: Engine, event: dict[str, Any], payload: str, now: datetime) -> str:
    """Store ``event`` once and apply it, in one transaction; returns what it did."""
    events = table(StripeEvent)
    module: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
    obj = event["data"]["object"]
    with engine.begin() as connection:
        stored = connection.execute(
            module.insert(events)
            .values(
                event_id=event["id"],
                type=event["type"][:64],
                object_id=str(obj.get("id"))[:255] if obj.get("id") else None,
                created_at=datetime.fromtimestamp(event["created"], UTC),
                received_at=now,
                outcome="received",
                payload=payload or json.dumps(event),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(events.c.id)
        ).all()
        if not stored:
            return "duplicate: already received"
        outcome = apply_event(connection, event, now)[:200]
        connection.execute(
            update(events).where(events.c.id == stored[0][0]).values(outcome=outcome)
        )
    return outcome


def apply_event(connection: Connection, event: dict[str, Any], now: datetime) -> str:
    """Apply one verified event's object to the customer tables (caller's transaction)."""
    kind = event["type"]
    if kind == "invoice.upcoming":
        return note_upcoming(connection, event, now)[0]
    resource = HANDLED.get(kind)
    if resource is None:
        return "ignored: not an event Retain uses"
    mapping = PAUSED_SUBSCRIPTIONS if resource == "subscriptions" else API_MAPPINGS[resource]
    row = event_row(event)
    version = datetime.fromtimestamp(event["created"], UTC)
    counts, rejects = stage_and_merge(
        connection, [Batch(rows_table([row], mapping), 1)], mapping, now, version
    )
    if rejects:
        return f"rejected: {rejects[0].column} {rejects[0].value!r}: {rejects[0].reason}"
    if counts.inserted:
        return f"applied: new {resource[:-1].replace('_', ' ')} {row['id']}"
    if counts.updated:
        return f"applied: {row['id']} updated"
    return f"unchanged: {row['id']} already has this or a newer state"
