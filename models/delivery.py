"""What happened to each message after it was sent, from the providers' webhooks: delivery events
stored once, each message's delivery state, and the suppressions the events imply.

``delivery_events`` (:class:`models.records.DeliveryEvent`) keeps every provider event exactly once
(its ``provider_event_id`` is unique: SendGrid's ``sg_event_id``, Twilio's ``<MessageSid>:<status>``),
so a webhook delivered twice changes nothing the second time: an event's effects (state, suppression)
are applied only when its row is new, in the same transaction.

``message_deliveries`` holds one row per message: how far it got (``accepted`` < ``sent`` <
``delivered`` / ``bounced`` / ``dropped`` / ``undelivered`` / ``failed`` < ``opened`` <
``clicked``), never moving backwards when events arrive out of order, and when it was delivered,
opened and clicked: what the report's funnel (assigned -> eligible -> sent -> delivered) counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel, col

from models.bulk import insert_ignoring_conflicts, table
from models.customer_data import Customer
from models.records import DeliveryEvent, Message, Suppression

DeliveryStatus = Literal[
    "accepted",
    "sent",
    "deferred",
    "delivered",
    "bounced",
    "dropped",
    "undelivered",
    "failed",
    "opened",
    "clicked",
]
RANK: dict[str, int] = {
    "accepted": 1,
    "deferred": 2,
    "sent": 2,
    "delivered": 3,
    "bounced": 3,
    "dropped": 3,
    "undelivered": 3,
    "failed": 3,
    "opened": 4,
    "clicked": 5,
}


class MessageDelivery(SQLModel, table=True):
    """How far one sent message got, from the provider's events."""

    __tablename__ = "message_deliveries"

    message_id: int = Field(foreign_key="messages.id", primary_key=True)
    status: str = Field(max_length=16, description="accepted | sent | delivered | bounced | ...")
    provider_status: str = Field(max_length=32, description="the provider's own word, latest")
    error_code: str | None = Field(default=None, max_length=32)
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    updated_at: datetime


@dataclass(frozen=True)
class SuppressionChange:
    """Add (or, for an SMS opt-back-in, lift) a suppression for a customer and channel."""

    channel: Literal["email", "sms"]
    reason: str
    lift: bool = False


@dataclass(frozen=True)
class IncomingEvent:
    """One provider event, normalised by the webhook receiver."""

    provider: Literal["sendgrid", "twilio", "link"]
    event_id: str
    event: str
    occurred_at: datetime
    payload: dict[str, Any]
    message_id: int | None = None
    provider_message_id: str | None = None
    status: DeliveryStatus | None = None
    error_code: str | None = None
    email: str | None = None
    phone: str | None = None
    customer_id: int | None = None
    suppression: SuppressionChange | None = None


@dataclass
class Outcome:
    stored: int = 0
    duplicates: int = 0
    unmatched: int = 0
    suppressed: int = 0
    lifted: int = 0
    by_event: dict[str, int] = field(default_factory=dict)


def _message_of(conn: Connection, event: IncomingEvent) -> tuple[int, int] | None:
    """(message id, customer id) of the event: by Retain's id, else by the provider's id
    (SendGrid's ``sg_message_id`` starts with the ``X-Message-Id`` the send returned)."""
    query = select(col(Message.id), col(Message.customer_id))
    if event.message_id is not None:
        row = conn.execute(query.where(col(Message.id) == event.message_id)).first()
        if row is not None:
            return int(row[0]), int(row[1])
    if event.provider_message_id:
        candidates = {event.provider_message_id, event.provider_message_id.split(".", 1)[0]}
        row = conn.execute(query.where(col(Message.provider_message_id).in_(candidates))).first()
        if row is not None:
            return int(row[0]), int(row[1])
    return None


def _customer_of(conn: Connection, event: IncomingEvent) -> int | None:
    if event.customer_id is not None:
        return event.customer_id
    if event.email:
        column, value = col(Customer.email), event.email
    elif event.phone:
        column, value = col(Customer.phone), event.phone
    else:
        return None
    row = conn.execute(select(col(Customer.id)).where(column == value)).first()
    return int(row[0]) if row is not None else None


def _advance(conn: Connection, message_id: int, event: IncomingEvent) -> None:
    assert event.status is not None
    at = event.occurred_at
    deliveries = table(MessageDelivery)
    current = conn.execute(
        select(deliveries.c.status).where(deliveries.c.message_id == message_id)
    ).scalar_one_or_none()
    stamps: dict[str, Any] = {}
    if event.status == "delivered":
        stamps["delivered_at"] = at
    elif event.status == "opened":
        stamps["opened_at"] = at
    elif event.status == "clicked":
        stamps["clicked_at"] = at
    if current is None:
        insert_ignoring_conflicts(
            conn,
            deliveries,
            [
                {
                    "message_id": message_id,
                    "status": event.status,
                    "provider_status": event.event,
                    "error_code": event.error_code,
                    "updated_at": at,
                    **stamps,
                }
            ],
            ["message_id"],
        )
        return
    values: dict[str, Any] = {"updated_at": at, **stamps}
    if RANK[event.status] >= RANK.get(current, 0):
        values.update(status=event.status, provider_status=event.event)
        if event.error_code is not None:
            values["error_code"] = event.error_code
    # Only fill a timestamp that is still empty (the first delivery / open / click counts).
    for name in stamps:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.message_id == message_id, deliveries.c[name].is_(None))
            .values({name: stamps[name]})
        )
        values.pop(name)
    conn.execute(update(deliveries).where(deliveries.c.message_id == message_id).values(values))


def _suppress(conn: Connection, customer_id: int, event: IncomingEvent, outcome: Outcome) -> None:
    change = event.suppression
    assert change is not None
    suppressions = table(Suppression)
    if change.lift:
        # START/YES/UNSTOP lifts an SMS stop only: not a bounce, nor an email unsubscribe.
        outcome.lifted += conn.execute(
            delete(suppressions).where(
                suppressions.c.customer_id == customer_id,
                suppressions.c.channel == change.channel,
                suppressions.c.reason == "stop",
            )
        ).rowcount
        return
    outcome.suppressed += insert_ignoring_conflicts(
        conn,
        suppressions,
        [
            {
                "customer_id": customer_id,
                "channel": change.channel,
                "reason": change.reason,
                "source": f"{event.provider}:{event.event}"[:64],
                "created_at": event.occurred_at,
            }
        ],
        ["customer_id", "channel"],
    )


def record_events(engine: Engine, events: Sequence[IncomingEvent]) -> Outcome:
    """Store ``events`` once each and apply the new ones (delivery state, suppressions), all in
    one transaction: a failure leaves nothing half-applied, and the provider's retry redoes it."""
    outcome = Outcome()
    with engine.begin() as conn:
        for event in events:
            found = _message_of(conn, event)
            row = {
                "message_id": found[0] if found else None,
                "provider": event.provider,
                "provider_event_id": event.event_id[:128],
                "event": event.event[:32],
                "occurred_at": event.occurred_at,
                "payload": json.dumps(event.payload, sort_keys=True, default=str),
            }
            if not insert_ignoring_conflicts(
                conn, table(DeliveryEvent), [row], ["provider_event_id"]
            ):
                outcome.duplicates += 1
                continue
            outcome.stored += 1
            outcome.by_event[event.event] = outcome.by_event.get(event.event, 0) + 1
            if found and event.status is not None:
                _advance(conn, found[0], event)
            if event.suppression is not None:
                customer = found[1] if found else _customer_of(conn, event)
                if customer is None:
                    outcome.unmatched += 1
                else:
                    _suppress(conn, customer, event, outcome)
            elif found is None:
                outcome.unmatched += 1
    return outcome


def delivery_of(engine: Engine, message_id: int) -> MessageDelivery | None:
    """The delivery state of one message (for tests and ``retain preview``)."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(table(MessageDelivery)).where(
                    table(MessageDelivery).c.message_id == message_id
                )
            )
            .mappings()
            .first()
        )
    return MessageDelivery(**row) if row is not None else None
