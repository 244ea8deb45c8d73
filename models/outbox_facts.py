"""What a batch of outbox messages needs to be decided, in a handful of queries: the customers
(contact data, consent, suppressions, plan, card), the experiments with their *current* spec
snapshot and the arms auto-stop stopped, and which ``unless`` conditions hold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from models.arm_decisions import recorded_stops
from models.billing_facts import card_added_clause, invoice_paid_clause
from models.customer_data import ActivityEvent, Customer, PaymentMethod, Subscription
from models.records import (
    Experiment,
    ExperimentSnapshot,
    Message,
    OfferGrant,
    Suppression,
)


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
    country: str | None = None


@dataclass(frozen=True)
class ExperimentFacts:
    id: int
    key: str
    status: str
    spec_yaml: str | None
    """The YAML of the experiment's current snapshot (the one its ``spec_hash`` names)."""
    auto_stopped: frozenset[str] = frozenset()
    """Arms with a recorded automatic stop (the YAML's arm ``status`` can override it)."""


def load_customers(conn: Connection, customer_ids: Iterable[int]) -> dict[int, CustomerFacts]:
    """Customers with their suppressed channels (each result fetched whole: one call, not one
    per row), current plan (the latest subscription that is not
    canceled, else the latest) and default card (the latest default payment method)."""
    ids = sorted(set(customer_ids))
    suppressed: dict[int, set[str]] = {}
    for cid, channel in conn.execute(
        select(col(Suppression.customer_id), col(Suppression.channel)).where(
            col(Suppression.customer_id).in_(ids)
        )
    ).all():
        suppressed.setdefault(cid, set()).add(channel)
    plans: dict[int, tuple[bool, str]] = {}
    for cid, plan, status in conn.execute(
        select(col(Subscription.customer_id), col(Subscription.plan), col(Subscription.status))
        .where(col(Subscription.customer_id).in_(ids))
        .order_by(col(Subscription.started_at), col(Subscription.id))
    ).all():
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
    ).all():
        cards[cid] = CardFacts(brand, last4, month, year)
    rows = conn.execute(select(Customer).where(col(Customer.id).in_(ids))).mappings().all()
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
            country=r["country"],
        )
        for r in rows
    }


def load_experiments(conn: Connection, experiment_ids: Iterable[int]) -> dict[int, ExperimentFacts]:
    """Experiments with the YAML of their *current* snapshot: the one whose hash the experiment
    row names, so a YAML reverted to an earlier version is applied as it is now."""
    ids = sorted(set(experiment_ids))
    query = (
        select(
            col(Experiment.id),
            col(Experiment.key),
            col(Experiment.status),
            col(ExperimentSnapshot.spec_yaml),
        )
        .outerjoin(
            ExperimentSnapshot,
            and_(
                col(ExperimentSnapshot.experiment_id) == col(Experiment.id),
                col(ExperimentSnapshot.spec_hash) == col(Experiment.spec_hash),
            ),
        )
        .where(col(Experiment.id).in_(ids))
    )
    stops = recorded_stops(conn, ids)
    return {
        eid: ExperimentFacts(eid, key, status, yaml, frozenset(stops[eid]))
        for eid, key, status, yaml in conn.execute(query).all()
    }


def _condition_clauses(now: datetime) -> dict[str, Any]:
    """Per ``unless`` condition, a clause correlated with the outer ``messages`` row."""
    payment_method_updated = card_added_clause(now)
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
    ids = sorted(set(message_ids))
    if not ids:
        return set()
    clauses = _condition_clauses(now)
    query = select(col(Message.id)).where(
        col(Message.id).in_(ids),
        or_(
            *(
                and_(col(Message.unless_condition) == name, clause)
                for name, clause in clauses.items()
            )
        ),
    )
    return {i for i in conn.execute(query).scalars().all() if i is not None}
