"""Outbox queries for the dispatcher: claim due messages under a lease, and record each batch's
decisions and results in one transaction each (what a batch needs to be decided is loaded by
:mod:`models.outbox_facts`).

A message moves ``pending`` -> ``sending`` (``status_reason`` ``claimed``, then ``in_flight``) ->
``sent`` / ``failed`` / ``skipped`` / ``withheld`` (a control customer's eligible would-be message),
or back to ``pending`` (deferred for quiet hours, a transient error, or found unsent).

Exactly once:

- **Claim** is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)
  RETURNING``: concurrent dispatchers on PostgreSQL skip each other's rows; SQLite serialises
  writers. A claim carries ``lease_expires_at``; a claim whose lease expired (its worker died)
  is claimable again, since nothing was handed to a provider yet.
- **Decide** (:func:`begin_decisions`) starts with a write (the lease renewal), so on SQLite the
  transaction holds the write lock before it reads, and on PostgreSQL it locks the batch's customer
  rows (``FOR UPDATE``, in id order): the frequency-cap count (sends, plus messages in flight
  anywhere) and the in-flight marks that follow are atomic per customer across dispatchers.
  A message is marked ``in_flight`` with a :class:`~models.dispatch_records.SendAttempt` row in
  that transaction, before any provider call.
- **Results** are written in one transaction per batch, guarded by ``claimed_by`` and
  ``status = 'sending'``.
- **Reconcile** (:mod:`models.outbox_recovery`): an in-flight message whose lease expired is asked
  about at the provider and marked sent or put back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col
from sqlmodel.sql.sqltypes import UTCDateTime

from models.bulk import insert_ignoring_conflicts, table
from models.customer_data import Customer
from models.dispatch_records import SendAttempt
from models.records import (
    Message,
    Suppression,
)

CLAIMED = "claimed"
IN_FLIGHT = "in_flight"
RECONCILING = "reconciling"


def utc(value: datetime) -> datetime:
    """A stored (naive UTC) or aware datetime as aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    idempotency_key: str
    experiment_id: int
    customer_id: int
    arm: str
    step_index: int
    channel: str
    template: str
    unless_condition: str | None
    scheduled_at: datetime
    attempts: int
    shadow: bool = False


# --- Claiming --------------------------------------------------------------------------------------


def _claimable(now: datetime, channels: Collection[str]) -> Any:
    on_channel = or_(col(Message.channel).in_(list(channels)), col(Message.shadow))
    due = and_(col(Message.status) == "pending", col(Message.scheduled_at) <= now)
    abandoned = and_(
        col(Message.status) == "sending",
        col(Message.status_reason) == CLAIMED,
        col(Message.lease_expires_at) < now,
    )
    return and_(on_channel, or_(due, abandoned))


def claim(
    engine: Engine,
    now: datetime,
    worker_id: str,
    limit: int,
    channels: Collection[str],
    lease_until: datetime,
) -> list[ClaimedMessage]:
    """Claim up to ``limit`` messages due at ``now`` on ``channels`` (shadow rows on any channel),
    or abandoned by a worker whose lease expired, until ``lease_until``. One statement."""
    ids = (
        select(col(Message.id))
        .where(_claimable(now, channels))
        .order_by(col(Message.scheduled_at), col(Message.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
        # Materialised: PostgreSQL may otherwise re-run a LIMIT ... SKIP LOCKED subquery per
        # row of the update and take more rows than the limit.
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    statement = (
        update(Message)
        .where(col(Message.id).in_(select(ids.c.id)), _claimable(now, channels))
        .values(
            status="sending",
            status_reason=CLAIMED,
            claimed_by=worker_id,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        .returning(
            col(Message.id),
            col(Message.idempotency_key),
            col(Message.experiment_id),
            col(Message.customer_id),
            col(Message.arm),
            col(Message.step_index),
            col(Message.channel),
            col(Message.template),
            col(Message.unless_condition),
            col(Message.scheduled_at),
            col(Message.attempts),
            col(Message.shadow),
        )
    )
    with engine.begin() as conn:
        rows = conn.execute(statement).all()
    claimed = [ClaimedMessage(*row) for row in rows]
    return sorted(claimed, key=lambda m: (m.scheduled_at, m.id))


# --- The decision transaction ----------------------------------------------------------------------


def begin_decisions(
    conn: Connection,
    worker_id: str,
    message_ids: Sequence[int],
    customer_ids: Iterable[int],
    lease_until: datetime,
) -> set[int]:
    """Open a batch's decision transaction on ``conn`` (inside ``engine.begin()``): renew the
    batch's lease (a write first, so SQLite takes its write lock before any read), lock the
    customers' rows on PostgreSQL, and return the ids of the messages this worker still holds."""
    held = (
        conn.execute(  # RETURNING: the rows this worker still holds
            update(Message)
            .where(
                col(Message.id).in_(list(message_ids)),
                col(Message.claimed_by) == worker_id,
                col(Message.status) == "sending",
                col(Message.status_reason) == CLAIMED,
            )
            .values(lease_expires_at=lease_until)
            .returning(col(Message.id))
        )
        .scalars()
        .all()
    )
    mine = {i for i in held if i is not None}
    if conn.dialect.name == "postgresql":
        conn.execute(
            select(col(Customer.id))
            .where(col(Customer.id).in_(sorted(set(customer_ids))))
            .order_by(col(Customer.id))
            .with_for_update()
        ).all()
    return mine


def last_attempts(conn: Connection, message_ids: Iterable[int]) -> dict[int, int]:
    """The highest attempt number recorded per message (attempt numbers never repeat)."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    query = (
        select(col(SendAttempt.message_id), func.max(col(SendAttempt.attempt)))
        .where(col(SendAttempt.message_id).in_(ids))
        .group_by(col(SendAttempt.message_id))
    )
    return {mid: n for mid, n in conn.execute(query).all()}


@dataclass(frozen=True)
class RecentSends:
    """Per (customer, channel): sends in the cap window across experiments, messages in flight
    anywhere (counted as sent: they may be), and per experiment the control's would-be sends."""

    counts: dict[tuple[int, str], int]
    withheld: dict[tuple[int, str, int], int]

    def count(self, customer_id: int, channel: str, experiment_id: int, shadow: bool) -> int:
        base = self.counts.get((customer_id, channel), 0)
        if shadow:
            base += self.withheld.get((customer_id, channel, experiment_id), 0)
        return base


def recent_sends(conn: Connection, customer_ids: Iterable[int], since: datetime) -> RecentSends:
    """Sends after ``since`` and messages in flight now, for the frequency cap."""
    ids = sorted(set(customer_ids))
    sent_or_flying = or_(
        and_(col(Message.status) == "sent", col(Message.sent_at) > since),
        and_(
            col(Message.status) == "sending",
            col(Message.status_reason).in_([IN_FLIGHT, RECONCILING]),
        ),
    )
    counts: dict[tuple[int, str], int] = {}
    for cid, channel, n in conn.execute(
        select(col(Message.customer_id), col(Message.channel), func.count())
        .where(col(Message.customer_id).in_(ids), sent_or_flying)
        .group_by(col(Message.customer_id), col(Message.channel))
    ).all():
        counts[(cid, channel)] = n
    withheld: dict[tuple[int, str, int], int] = {}
    for cid, channel, eid, n in conn.execute(
        select(
            col(Message.customer_id), col(Message.channel), col(Message.experiment_id), func.count()
        )
        .where(
            col(Message.customer_id).in_(ids),
            col(Message.status) == "withheld",
            col(Message.sent_at) > since,
        )
        .group_by(col(Message.customer_id), col(Message.channel), col(Message.experiment_id))
    ).all():
        withheld[(cid, channel, eid)] = n
    return RecentSends(counts, withheld)


@dataclass(frozen=True)
class Outcome:
    """A new state for one claimed message, written with the batch."""

    message_id: int
    status: str
    reason: str | None
    channel: str | None = None
    scheduled_at: datetime | None = None
    error: str | None = None
    sent_at: datetime | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    attempts_delta: int = 0
    lease_until: datetime | None = None
    """Only for a message kept ``sending`` (outcome unknown): when it is reconciled."""


@dataclass(frozen=True)
class Attempt:
    """A provider attempt about to start: the message goes in flight with it."""

    message_id: int
    attempt: int
    channel: str
    address: str
    body_sha256: str


def write_outcomes(
    conn: Connection, worker_id: str, now: datetime, outcomes: Sequence[Outcome]
) -> int:
    """Apply ``outcomes`` to messages this worker holds; returns how many rows changed."""
    if not outcomes:
        return 0
    statement = (
        update(Message)
        .where(
            col(Message.id) == bindparam("b_id"),
            col(Message.claimed_by) == worker_id,
            col(Message.status) == "sending",
        )
        .values(
            status=bindparam("b_status", type_=String),
            status_reason=bindparam("b_reason", type_=String),
            channel=func.coalesce(bindparam("b_channel", type_=String), col(Message.channel)),
            scheduled_at=func.coalesce(
                bindparam("b_scheduled", type_=UTCDateTime()), col(Message.scheduled_at)
            ),
            last_error=func.coalesce(bindparam("b_error", type_=Text), col(Message.last_error)),
            sent_at=func.coalesce(
                bindparam("b_sent_at", type_=UTCDateTime()), col(Message.sent_at)
            ),
            provider=func.coalesce(bindparam("b_provider", type_=String), col(Message.provider)),
            provider_message_id=func.coalesce(
                bindparam("b_provider_id", type_=String), col(Message.provider_message_id)
            ),
            attempts=col(Message.attempts) + bindparam("b_delta", type_=Integer),
            lease_expires_at=bindparam("b_lease", type_=UTCDateTime()),
            claimed_by=bindparam("b_claimed_by", type_=String),
            updated_at=now,
        )
    )
    params = [
        {
            "b_id": o.message_id,
            "b_status": o.status,
            "b_reason": o.reason,
            "b_channel": o.channel,
            "b_scheduled": o.scheduled_at,
            "b_error": o.error,
            "b_sent_at": o.sent_at,
            "b_provider": o.provider,
            "b_provider_id": o.provider_message_id,
            "b_delta": o.attempts_delta,
            "b_lease": o.lease_until,
            "b_claimed_by": None if o.status == "pending" else worker_id,
        }
        for o in outcomes
    ]
    return conn.execute(statement, params).rowcount or 0


def start_attempts(
    conn: Connection,
    worker_id: str,
    now: datetime,
    lease_until: datetime,
    attempts: Sequence[Attempt],
) -> None:
    """Mark messages in flight and record their attempts: durable before any provider call."""
    if not attempts:
        return
    conn.execute(
        update(Message)
        .where(
            col(Message.id) == bindparam("b_id"),
            col(Message.claimed_by) == worker_id,
            col(Message.status) == "sending",
        )
        .values(
            status_reason=IN_FLIGHT,
            channel=bindparam("b_channel"),
            attempts=col(Message.attempts) + 1,
            lease_expires_at=lease_until,
            updated_at=now,
        ),
        [{"b_id": a.message_id, "b_channel": a.channel} for a in attempts],
    )
    conn.execute(
        table(SendAttempt).insert(),
        [
            {
                "message_id": a.message_id,
                "attempt": a.attempt,
                "worker": worker_id,
                "channel": a.channel,
                "address": a.address,
                "body_sha256": a.body_sha256,
                "started_at": now,
            }
            for a in attempts
        ],
    )


def finish_attempts(
    conn: Connection,
    now: datetime,
    results: Sequence[tuple[int, int, str, str | None, str | None]],
) -> None:
    """Record each attempt's ``(message_id, attempt, outcome, provider id, error code)``."""
    if not results:
        return
    conn.execute(
        update(SendAttempt)
        .where(
            col(SendAttempt.message_id) == bindparam("b_mid"),
            col(SendAttempt.attempt) == bindparam("b_attempt"),
        )
        .values(
            outcome=bindparam("b_outcome"),
            provider_message_id=bindparam("b_pid"),
            error_code=bindparam("b_code"),
            finished_at=now,
        ),
        [
            {"b_mid": m, "b_attempt": a, "b_outcome": o, "b_pid": p, "b_code": c}
            for m, a, o, p, c in results
        ],
    )


def add_suppressions(
    conn: Connection, now: datetime, rows: Iterable[tuple[int, str, str, str]]
) -> int:
    """Suppress ``(customer_id, channel, reason, source)``; existing ones are kept."""
    values = [
        {"customer_id": c, "channel": ch, "reason": r, "source": s, "created_at": now}
        for c, ch, r, s in rows
    ]
    if not values:
        return 0
    return insert_ignoring_conflicts(conn, table(Suppression), values, ["customer_id", "channel"])
