"""Outbox recovery queries: take over in-flight messages whose lease expired, settle them after
reconciliation, release claims, and count messages by state (``retain outbox status``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from models.dispatch_records import SendAttempt
from models.outbox import CLAIMED, IN_FLIGHT, RECONCILING, utc
from models.records import Experiment, Message


@dataclass(frozen=True)
class AttemptFacts:
    attempt: int
    channel: str
    address: str
    body_sha256: str
    started_at: datetime


@dataclass(frozen=True)
class InFlight:
    id: int
    idempotency_key: str
    experiment_key: str
    customer_id: int
    attempt: AttemptFacts | None
    """The latest attempt: what the provider is asked about (None: never handed over)."""


def _expired(now: datetime, channels: Collection[str]) -> Any:
    return and_(
        col(Message.status) == "sending",
        col(Message.status_reason).in_([IN_FLIGHT, RECONCILING]),
        col(Message.lease_expires_at) < now,
        col(Message.channel).in_(list(channels)),
    )


def take_over_expired(
    engine: Engine,
    now: datetime,
    worker_id: str,
    channels: Collection[str],
    lease_until: datetime,
    limit: int,
) -> list[InFlight]:
    """Claim up to ``limit`` in-flight messages whose lease expired (their worker died or their
    outcome is unknown), for reconciliation by this worker until ``lease_until``."""
    ids = (
        select(col(Message.id))
        .where(_expired(now, channels))
        .order_by(col(Message.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
        # Materialised: PostgreSQL may otherwise re-run a LIMIT ... SKIP LOCKED subquery per
        # row of the update and take more rows than the limit.
        .cte("picked")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    statement = (
        update(Message)
        .where(col(Message.id).in_(select(ids.c.id)), _expired(now, channels))
        .values(
            status_reason=RECONCILING,
            claimed_by=worker_id,
            lease_expires_at=lease_until,
            updated_at=now,
        )
        .returning(col(Message.id))
    )
    with engine.begin() as conn:
        taken = list(conn.execute(statement).scalars())
        if not taken:
            return []
        latest = (
            select(col(SendAttempt.message_id), func.max(col(SendAttempt.attempt)).label("n"))
            .where(col(SendAttempt.message_id).in_(taken))
            .group_by(col(SendAttempt.message_id))
            .subquery()
        )
        attempts = {
            mid: AttemptFacts(n, channel, address, digest, utc(started))
            for mid, n, channel, address, digest, started in conn.execute(
                select(
                    col(SendAttempt.message_id),
                    col(SendAttempt.attempt),
                    col(SendAttempt.channel),
                    col(SendAttempt.address),
                    col(SendAttempt.body_sha256),
                    col(SendAttempt.started_at),
                ).join(
                    latest,
                    and_(
                        latest.c.message_id == col(SendAttempt.message_id),
                        latest.c.n == col(SendAttempt.attempt),
                    ),
                )
            )
        }
        rows = conn.execute(
            select(
                col(Message.id),
                col(Message.idempotency_key),
                col(Experiment.key),
                col(Message.customer_id),
            )
            .join(Experiment, col(Experiment.id) == col(Message.experiment_id))
            .where(col(Message.id).in_(taken))
        ).all()
    return [InFlight(mid, key, exp, cid, attempts.get(mid)) for mid, key, exp, cid in rows]


def settle(
    engine: Engine,
    worker_id: str,
    now: datetime,
    found: Sequence[tuple[InFlight, str, str]],
    absent: Sequence[InFlight],
    unsure: Sequence[InFlight],
) -> None:
    """Record reconciliation: ``found`` (message, provider, provider id) are sent; ``absent`` go
    back to pending (due now, the attempt not counted); ``unsure`` stay in flight, their lease
    expired again so the next run asks once more."""
    guard = [col(Message.claimed_by) == worker_id, col(Message.status) == "sending"]
    with engine.begin() as conn:
        for item, provider, provider_id in found:
            started = item.attempt.started_at if item.attempt else now
            conn.execute(
                update(Message)
                .where(col(Message.id) == item.id, *guard)
                .values(
                    status="sent",
                    status_reason="reconciled",
                    sent_at=started,
                    provider=provider,
                    provider_message_id=provider_id,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if item.attempt:
                _finish(conn, item.id, item.attempt.attempt, "found", provider_id, now)
        absent_ids = [item.id for item in absent]
        if absent_ids:
            conn.execute(
                update(Message)
                .where(col(Message.id).in_(absent_ids), *guard)
                .values(
                    status="pending",
                    status_reason="reconciled_not_sent",
                    claimed_by=None,
                    lease_expires_at=None,
                    attempts=func.max(col(Message.attempts) - 1, 0)
                    if conn.dialect.name == "sqlite"
                    else func.greatest(col(Message.attempts) - 1, 0),
                    updated_at=now,
                )
            )
            for item in absent:
                if item.attempt:
                    _finish(conn, item.id, item.attempt.attempt, "absent", None, now)
        unsure_ids = [item.id for item in unsure]
        if unsure_ids:
            conn.execute(
                update(Message)
                .where(col(Message.id).in_(unsure_ids), *guard)
                .values(status_reason=IN_FLIGHT, lease_expires_at=now, updated_at=now)
            )


def _finish(
    conn: Any, message_id: int, attempt: int, outcome: str, provider_id: str | None, now: datetime
) -> None:
    conn.execute(
        update(SendAttempt)
        .where(col(SendAttempt.message_id) == message_id, col(SendAttempt.attempt) == attempt)
        .values(outcome=outcome, provider_message_id=provider_id, finished_at=now)
    )


def release(engine: Engine, worker_id: str, message_ids: Sequence[int]) -> int:
    """Put ``message_ids`` this worker claimed but never sent back to pending."""
    if not message_ids:
        return 0
    with engine.begin() as conn:
        return (
            conn.execute(
                update(Message)
                .where(
                    col(Message.id).in_(list(message_ids)),
                    col(Message.claimed_by) == worker_id,
                    col(Message.status) == "sending",
                    col(Message.status_reason) == CLAIMED,
                )
                .values(status="pending", claimed_by=None, lease_expires_at=None)
            ).rowcount
            or 0
        )


def expire_leases(engine: Engine, now: datetime) -> int:
    """End every lease now (``retain outbox recover --force``): only when no dispatcher runs."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(Message)
                .where(col(Message.status) == "sending", col(Message.lease_expires_at) >= now)
                .values(lease_expires_at=now)
            ).rowcount
            or 0
        )


def release_expired_claims(engine: Engine, now: datetime) -> int:
    """Put claims whose lease expired (never handed to a provider) back to pending."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(Message)
                .where(
                    col(Message.status) == "sending",
                    col(Message.status_reason) == CLAIMED,
                    or_(
                        col(Message.lease_expires_at) < now, col(Message.lease_expires_at).is_(None)
                    ),
                )
                .values(status="pending", claimed_by=None, lease_expires_at=None, updated_at=now)
            ).rowcount
            or 0
        )


@dataclass(frozen=True)
class StateCount:
    status: str
    detail: str
    count: int
    expired: int
    """Of ``count``, how many hold a lease that has expired (a dead worker's)."""


def status_counts(engine: Engine, now: datetime) -> list[StateCount]:
    """Messages per status (``sending`` split by claimed / in flight / reconciling)."""
    detail = func.coalesce(col(Message.status_reason), "")
    lapsed = and_(col(Message.status) == "sending", col(Message.lease_expires_at) < now)
    expired = func.sum(case((lapsed, 1), else_=0))
    query = (
        select(col(Message.status), detail, func.count(), expired)
        .group_by(col(Message.status), detail)
        .order_by(col(Message.status), detail)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    totals: dict[tuple[str, str], list[int]] = {}
    for status, reason, n, lapsed in rows:
        key = (status, reason if status == "sending" else "")
        entry = totals.setdefault(key, [0, 0])
        entry[0] += n
        entry[1] += int(lapsed or 0)
    return [StateCount(s, d, n, e) for (s, d), (n, e) in sorted(totals.items())]
