"""Outbox queries for the dispatcher: claim due messages, load what a batch needs in a few queries,
and record each message's new state in its own short transaction.

Claiming is an ``UPDATE ... WHERE status = 'pending'``: on PostgreSQL a concurrent claimer waits for
the row lock and then sees the row is no longer pending; on SQLite writers are serialised. Either way
each message is claimed by exactly one worker, and every later state change is guarded by
``claimed_by = <worker> AND status = 'sending'``.

Crash recovery. A claimed message carries ``status_reason = 'claimed'`` until the worker commits
``'in_flight'`` just before calling the provider. After a crash:

- ``claimed`` rows were never handed to a provider: :func:`release_unattempted` puts them back;
- ``in_flight`` rows may or may not have been sent, and providers take no idempotency key, so they
  are never resent automatically. :func:`stuck_messages` lists them for an operator, who checks
  the provider's logs and then sets each row to ``sent`` or back to ``pending``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from models.billing_facts import invoice_paid_clause
from models.customer_data import ActivityEvent, Customer, PaymentMethod, Subscription
from models.records import (
    Assignment,
    Experiment,
    ExperimentSnapshot,
    Message,
    OfferGrant,
    Suppression,
)

CLAIMED = "claimed"
IN_FLIGHT = "in_flight"


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


@dataclass(frozen=True)
class CardFacts:
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class CustomerFacts:
    id: int
    external_id: str
    name: str
    email: str | None
    phone: str | None
    locale: str
    timezone: str
    email_consent: bool
    sms_consent: bool
    suppressed_channels: frozenset[str]
    plan: str | None
    card: CardFacts | None


@dataclass(frozen=True)
class ExperimentFacts:
    id: int
    key: str
    status: str
    spec_yaml: str | None
    """The latest snapshot's YAML, or None if the experiment has no snapshot."""


@dataclass(frozen=True)
class StuckMessage:
    id: int
    idempotency_key: str
    customer_id: int
    channel: str
    claimed_by: str | None
    since: datetime
    attempted: bool
    """True if the worker may have handed it to the provider (``in_flight``)."""
    last_error: str | None


# --- Claiming --------------------------------------------------------------------------------------


def claim_due(
    engine: Engine, now: datetime, worker_id: str, limit: int, channels: Collection[str]
) -> tuple[int, list[ClaimedMessage]]:
    """Claim up to ``limit`` pending messages due at ``now`` on ``channels``. Returns how many due
    messages were seen (0 means the outbox has nothing more due) and those this worker claimed
    (others may have been claimed concurrently by another worker)."""
    due = (
        select(col(Message.id))
        .where(
            col(Message.status) == "pending",
            col(Message.scheduled_at) <= now,
            col(Message.channel).in_(list(channels)),
        )
        .order_by(col(Message.scheduled_at), col(Message.id))
        .limit(limit)
    )
    with engine.connect() as conn:
        ids = list(conn.execute(due).scalars())
    if not ids:
        return 0, []
    claim = (
        update(Message)
        .where(col(Message.id).in_(ids), col(Message.status) == "pending")
        .values(status="sending", claimed_by=worker_id, status_reason=CLAIMED, updated_at=now)
    )
    with engine.begin() as conn:
        conn.execute(claim)
    mine = (
        select(Message)
        .where(
            col(Message.id).in_(ids),
            col(Message.claimed_by) == worker_id,
            col(Message.status) == "sending",
            col(Message.status_reason) == CLAIMED,
        )
        .order_by(col(Message.scheduled_at), col(Message.id))
    )
    with engine.connect() as conn:
        rows = conn.execute(mine).mappings().all()
    return len(ids), [
        ClaimedMessage(
            id=r["id"],
            idempotency_key=r["idempotency_key"],
            experiment_id=r["experiment_id"],
            customer_id=r["customer_id"],
            arm=r["arm"],
            step_index=r["step_index"],
            channel=r["channel"],
            template=r["template"],
            unless_condition=r["unless_condition"],
            scheduled_at=r["scheduled_at"],
            attempts=r["attempts"],
        )
        for r in rows
    ]


# --- Batch facts -----------------------------------------------------------------------------------


def load_customers(conn: Connection, customer_ids: Iterable[int]) -> dict[int, CustomerFacts]:
    """Customers with their suppressed channels, current plan (the latest subscription that is not
    canceled, else the latest) and default card (the latest default payment method)."""
    ids = sorted(set(customer_ids))
    suppressed: dict[int, set[str]] = {}
    for cid, channel in conn.execute(
        select(col(Suppression.customer_id), col(Suppression.channel)).where(
            col(Suppression.customer_id).in_(ids)
        )
    ):
        suppressed.setdefault(cid, set()).add(channel)
    plans: dict[int, tuple[bool, str]] = {}
    for cid, plan, status in conn.execute(
        select(col(Subscription.customer_id), col(Subscription.plan), col(Subscription.status))
        .where(col(Subscription.customer_id).in_(ids))
        .order_by(col(Subscription.started_at), col(Subscription.id))
    ):
        live = status != "canceled"
        if live or not plans.get(cid, (False, ""))[0]:
            plans[cid] = (live, plan)
    cards: dict[int, CardFacts] = {}
    for cid, brand, last4, month, year in conn.execute(
        select(
            col(PaymentMethod.customer_id),
            col(PaymentMethod.brand),
            col(PaymentMethod.last4),
            col(PaymentMethod.exp_month),
            col(PaymentMethod.exp_year),
        )
        .where(col(PaymentMethod.customer_id).in_(ids), col(PaymentMethod.is_default))
        .order_by(col(PaymentMethod.created_at), col(PaymentMethod.id))
    ):
        cards[cid] = CardFacts(brand, last4, month, year)
    rows = conn.execute(select(Customer).where(col(Customer.id).in_(ids))).mappings()
    return {
        r["id"]: CustomerFacts(
            id=r["id"],
            external_id=r["external_id"],
            name=r["name"],
            email=r["email"],
            phone=r["phone"],
            locale=r["locale"],
            timezone=r["timezone"],
            email_consent=r["email_consent"],
            sms_consent=r["sms_consent"],
            suppressed_channels=frozenset(suppressed.get(r["id"], ())),
            plan=plans[r["id"]][1] if r["id"] in plans else None,
            card=cards.get(r["id"]),
        )
        for r in rows
    }


def load_experiments(conn: Connection, experiment_ids: Iterable[int]) -> dict[int, ExperimentFacts]:
    """Experiments with the YAML of their latest spec snapshot."""
    ids = sorted(set(experiment_ids))
    latest: dict[int, str] = {}
    for eid, spec_yaml in conn.execute(
        select(col(ExperimentSnapshot.experiment_id), col(ExperimentSnapshot.spec_yaml))
        .where(col(ExperimentSnapshot.experiment_id).in_(ids))
        .order_by(col(ExperimentSnapshot.created_at), col(ExperimentSnapshot.id))
    ):
        latest[eid] = spec_yaml
    query = select(col(Experiment.id), col(Experiment.key), col(Experiment.status)).where(
        col(Experiment.id).in_(ids)
    )
    return {
        eid: ExperimentFacts(eid, key, status, latest.get(eid))
        for eid, key, status in conn.execute(query)
    }


def sent_counts(
    conn: Connection, customer_ids: Iterable[int], since: datetime
) -> dict[tuple[int, str], int]:
    """Messages sent after ``since`` per (customer, channel), across all experiments."""
    query = (
        select(col(Message.customer_id), col(Message.channel), func.count())
        .where(
            col(Message.customer_id).in_(sorted(set(customer_ids))),
            col(Message.status) == "sent",
            col(Message.sent_at) > since,
        )
        .group_by(col(Message.customer_id), col(Message.channel))
    )
    return {(cid, channel): n for cid, channel, n in conn.execute(query)}


def _condition_clauses(now: datetime) -> dict[str, Any]:
    """Per ``unless`` condition, a clause correlated with the outer ``messages`` row."""
    payment_method_updated = exists(
        select(col(PaymentMethod.id))
        .join(Assignment, col(Assignment.customer_id) == col(PaymentMethod.customer_id))
        .where(
            col(PaymentMethod.customer_id) == col(Message.customer_id),
            col(Assignment.experiment_id) == col(Message.experiment_id),
            col(PaymentMethod.created_at) > col(Assignment.assigned_at),
            col(PaymentMethod.created_at) <= now,
        )
    )
    onboarding_completed = exists(
        select(col(ActivityEvent.id)).where(
            col(ActivityEvent.customer_id) == col(Message.customer_id),
            col(ActivityEvent.kind) == "milestone",
            col(ActivityEvent.name) == "onboarding_completed",
            col(ActivityEvent.occurred_at) <= now,
        )
    )
    offer_accepted = exists(
        select(col(OfferGrant.id)).where(
            col(OfferGrant.experiment_id) == col(Message.experiment_id),
            col(OfferGrant.customer_id) == col(Message.customer_id),
            col(OfferGrant.accepted_at).is_not(None),
            col(OfferGrant.accepted_at) <= now,
        )
    )
    unsubscribed = exists(
        select(col(Suppression.id)).where(col(Suppression.customer_id) == col(Message.customer_id))
    )
    return {
        "payment_method_updated": payment_method_updated,
        "onboarding_completed": onboarding_completed,
        "offer_accepted": offer_accepted,
        "unsubscribed": unsubscribed,
        "invoice_paid": invoice_paid_clause(now),
    }


def conditions_met(conn: Connection, message_ids: Iterable[int], now: datetime) -> set[int]:
    """Ids of the messages whose ``unless_condition`` holds at ``now``, in one query:
    payment_method_updated (a payment method added after the customer's assignment to the
    message's experiment; no assignment -> false), onboarding_completed (the milestone event),
    offer_accepted (an accepted offer grant of the experiment), unsubscribed (any suppression)."""
    clauses = _condition_clauses(now)
    query = select(col(Message.id)).where(
        col(Message.id).in_(sorted(set(message_ids))),
        or_(
            *(
                and_(col(Message.unless_condition) == name, clause)
                for name, clause in clauses.items()
            )
        ),
    )
    return {i for i in conn.execute(query).scalars() if i is not None}


# --- State changes (each in its own transaction) ---------------------------------------------------


def _finish(engine: Engine, message_id: int, worker_id: str, **values: Any) -> bool:
    guarded = (
        update(Message)
        .where(
            col(Message.id) == message_id,
            col(Message.claimed_by) == worker_id,
            col(Message.status) == "sending",
        )
        .values(**values)
    )
    with engine.begin() as conn:
        return conn.execute(guarded).rowcount == 1


def mark_in_flight(engine: Engine, message_id: int, worker_id: str, now: datetime) -> bool:
    """Record that the message is about to be handed to a provider. False if this worker no longer
    holds the claim (then it must not send)."""
    return _finish(engine, message_id, worker_id, status_reason=IN_FLIGHT, updated_at=now)


def mark_sent(
    engine: Engine,
    message_id: int,
    worker_id: str,
    now: datetime,
    provider: str,
    provider_message_id: str,
    note: str | None = None,
) -> bool:
    return _finish(
        engine,
        message_id,
        worker_id,
        status="sent",
        status_reason=note,
        sent_at=now,
        provider=provider,
        provider_message_id=provider_message_id,
        attempts=col(Message.attempts) + 1,
        updated_at=now,
    )


def mark_skipped(
    engine: Engine, message_id: int, worker_id: str, now: datetime, reason: str
) -> bool:
    return _finish(
        engine, message_id, worker_id, status="skipped", status_reason=reason, updated_at=now
    )


def mark_deferred(
    engine: Engine, message_id: int, worker_id: str, now: datetime, until: datetime, reason: str
) -> bool:
    """Back to pending, due again at ``until``."""
    return _finish(
        engine,
        message_id,
        worker_id,
        status="pending",
        status_reason=reason,
        scheduled_at=until,
        updated_at=now,
    )


def mark_retry(
    engine: Engine, message_id: int, worker_id: str, now: datetime, retry_at: datetime, error: str
) -> bool:
    """A transient send failure: back to pending at ``retry_at``, one more attempt counted."""
    return _finish(
        engine,
        message_id,
        worker_id,
        status="pending",
        status_reason="transient_error",
        scheduled_at=retry_at,
        attempts=col(Message.attempts) + 1,
        last_error=error,
        updated_at=now,
    )


def mark_failed(
    engine: Engine,
    message_id: int,
    worker_id: str,
    now: datetime,
    reason: str,
    error: str,
    *,
    attempted: bool,
) -> bool:
    """A terminal failure; ``attempted`` counts a provider attempt."""
    values: dict[str, Any] = {}
    if attempted:
        values["attempts"] = col(Message.attempts) + 1
    return _finish(
        engine,
        message_id,
        worker_id,
        status="failed",
        status_reason=reason,
        last_error=error,
        updated_at=now,
        **values,
    )


def mark_outcome_unknown(
    engine: Engine, message_id: int, worker_id: str, now: datetime, error: str
) -> bool:
    """The provider call ended in an unexpected error: it may have been sent, so the row stays
    ``sending``/``in_flight`` for an operator (see :func:`stuck_messages`)."""
    return _finish(
        engine,
        message_id,
        worker_id,
        attempts=col(Message.attempts) + 1,
        last_error=error,
        updated_at=now,
    )


# --- Operators -------------------------------------------------------------------------------------


def stuck_messages(engine: Engine, older_than: timedelta, now: datetime) -> list[StuckMessage]:
    """Messages left in ``sending`` for longer than ``older_than`` (a crashed or killed worker).
    ``attempted`` ones may have reached the provider: check its logs before resending."""
    query = (
        select(Message)
        .where(col(Message.status) == "sending", col(Message.updated_at) <= now - older_than)
        .order_by(col(Message.updated_at), col(Message.id))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        StuckMessage(
            id=r["id"],
            idempotency_key=r["idempotency_key"],
            customer_id=r["customer_id"],
            channel=r["channel"],
            claimed_by=r["claimed_by"],
            since=r["updated_at"],
            attempted=r["status_reason"] != CLAIMED,
            last_error=r["last_error"],
        )
        for r in rows
    ]


def release_unattempted(engine: Engine, older_than: timedelta, now: datetime) -> int:
    """Put messages claimed more than ``older_than`` ago but never handed to a provider back to
    ``pending``; returns how many. Safe while workers run: a worker re-checks its claim before
    sending (:func:`mark_in_flight`)."""
    release = (
        update(Message)
        .where(
            col(Message.status) == "sending",
            col(Message.status_reason) == CLAIMED,
            col(Message.updated_at) <= now - older_than,
        )
        .values(status="pending", status_reason=None, claimed_by=None, updated_at=now)
    )
    with engine.begin() as conn:
        return conn.execute(release).rowcount
