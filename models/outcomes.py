"""Write the demo's simulated outcomes into the customer data tables, where the metric SQL reads
them exactly as it would read a real business's data."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta

import numpy as np
from sqlalchemy import bindparam, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from experiments.simulation.realise import Events, FinalOutcomes
from experiments.simulation.response import Population, engagement
from models.bulk import insert_ignoring_conflicts, table
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.records import Assignment, Message, OfferGrant, Suppression
from models.recovery import owed_cents, record_recoveries
from models.segments import feature_rows


def _new_card(customer_id: int, at: datetime) -> dict[str, object]:
    year, month = at.year + 3, at.month
    next_month = date(year + month // 12, month % 12 + 1, 1)
    digest = hashlib.sha256(f"{customer_id}:{at.isoformat()}".encode()).hexdigest()
    return {
        "customer_id": customer_id,
        "brand": "visa",
        "last4": str(int(digest[:8], 16) % 10_000).zfill(4),
        "exp_month": month,
        "exp_year": year,
        "expires_on": next_month - timedelta(days=1),
        "is_default": True,
        "created_at": at,
    }


def write_events(engine: Engine, experiment_id: int, response: str, events: Events) -> None:
    """Record responses (as the family's data: a new card, a milestone, an accepted offer),
    offers made, and unsubscribes (as suppressions)."""
    with engine.begin() as connection:
        if events.offers:
            insert_ignoring_conflicts(
                connection,
                table(OfferGrant),
                [
                    {
                        "experiment_id": experiment_id,
                        "customer_id": o.customer_id,
                        "offer_kind": o.kind,
                        "percent_off": o.percent,
                        "months": o.months,
                        "offered_at": o.at,
                        "cost_cents": 0,
                    }
                    for o in events.offers
                ],
                ["experiment_id", "customer_id", "offer_kind"],
            )
        if events.responses and response == "card_updated_14d":
            connection.execute(
                update(PaymentMethod)
                .where(
                    col(PaymentMethod.customer_id).in_([r.customer_id for r in events.responses])
                )
                .values(is_default=False)
            )
            connection.execute(
                table(PaymentMethod).insert(),
                [_new_card(r.customer_id, r.at) for r in events.responses],
            )
        elif events.responses and response == "onboarding_completed_14d":
            connection.execute(
                table(ActivityEvent).insert(),
                [
                    {
                        "customer_id": r.customer_id,
                        "kind": "milestone",
                        "name": "onboarding_completed",
                        "occurred_at": r.at,
                        "quantity": 1,
                    }
                    for r in events.responses
                ],
            )
        elif events.responses and response == "payment_recovered_14d":
            record_recoveries(connection, [(r.customer_id, r.at) for r in events.responses])
        elif events.responses and response == "offer_accepted_14d":
            grant = table(OfferGrant)
            connection.execute(
                update(grant)
                .where(
                    grant.c.experiment_id == experiment_id,
                    grant.c.customer_id == bindparam("cid"),
                )
                .values(accepted_at=bindparam("at")),
                [{"cid": r.customer_id, "at": r.at} for r in events.responses],
            )
        if events.unsubscribes:
            insert_ignoring_conflicts(
                connection,
                table(Suppression),
                [
                    {
                        "customer_id": u.customer_id,
                        "channel": u.channel,
                        "reason": "unsubscribe" if u.channel == "email" else "stop",
                        "source": "demo",
                        "created_at": u.at,
                    }
                    for u in events.unsubscribes
                ],
                ["customer_id", "channel"],
            )


def write_final(engine: Engine, outcomes: FinalOutcomes) -> None:
    """Record cancellations and the renewals paid over the horizon."""
    with engine.begin() as connection:
        if outcomes.cancellations:
            subs = table(Subscription)
            connection.execute(
                update(subs)
                .where(subs.c.customer_id == bindparam("cid"), subs.c.canceled_at.is_(None))
                .values(status="canceled", canceled_at=bindparam("at"), cancel_reason="churned"),
                [{"cid": c.customer_id, "at": c.at} for c in outcomes.cancellations],
            )
        if outcomes.renewals:
            connection.execute(
                table(Invoice).insert(),
                [
                    {
                        "customer_id": r.customer_id,
                        "amount_cents": r.amount_cents,
                        "status": "paid",
                        "attempts": 1,
                        "due_at": r.at,
                        "paid_at": r.at,
                    }
                    for r in outcomes.renewals
                ],
            )


def population_for(
    engine: Engine, experiment_id: int, as_of: datetime
) -> tuple[Population, list[str]]:
    """The experiment's assigned customers as the demo's response model sees them, with each
    customer's arm (features as of ``as_of``, the assignment time)."""
    with engine.connect() as connection:
        assigned = connection.execute(
            select(col(Assignment.customer_id), col(Assignment.arm))
            .where(col(Assignment.experiment_id) == experiment_id)
            .order_by(col(Assignment.customer_id))
        ).all()
        ids = [int(c) for c, _ in assigned]
        suppressed = set(
            connection.execute(
                select(col(Suppression.customer_id), col(Suppression.channel))
                .join(Assignment, col(Assignment.customer_id) == col(Suppression.customer_id))
                .where(
                    col(Assignment.experiment_id) == experiment_id,
                    col(Suppression.created_at) < as_of,
                )
            ).all()
        )
        addresses = {
            int(c): (email, phone)
            for c, email, phone in connection.execute(
                select(col(Customer.id), col(Customer.email), col(Customer.phone))
                .join(Assignment, col(Assignment.customer_id) == col(Customer.id))
                .where(col(Assignment.experiment_id) == experiment_id)
            )
        }
    features = {int(row["customer_id"]): row for row in feature_rows(engine, as_of, ids)}  # type: ignore[call-overload]

    def column(name: str) -> np.ndarray:
        return np.array([float(features[c][name] or 0) for c in ids])  # type: ignore[arg-type]

    def reach(channel: str, consent: str, address: int) -> np.ndarray:
        return np.array(
            [
                bool(features[c][consent])
                and addresses[c][address] is not None
                and (c, channel) not in suppressed
                for c in ids
            ],
            dtype=bool,
        )

    pop = Population(
        customer_ids=np.array(ids, dtype=np.int64),
        engagement=engagement(column("usage_last_14d"), column("usage_prior_14d")),
        reach_email=reach("email", "email_consent", 0),
        reach_sms=reach("sms", "sms_consent", 1),
        mrr_cents=np.round(column("subscription.mrr") * 100).astype(np.int64),
        billing_interval=tuple(str(features[c]["subscription.billing_interval"]) for c in ids),
        days_to_renewal=np.maximum(column("subscription.days_to_renewal"), 0.0),
        owed_cents=owed_cents(engine, ids, as_of),
    )
    return pop, [arm for _, arm in assigned]


def delivered(engine: Engine, experiment_id: int, arm: str, step_index: int) -> dict[int, datetime]:
    """customer id -> sent_at of the messages of one arm step that were really sent."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(Message.customer_id), col(Message.sent_at)).where(
                Message.experiment_id == experiment_id,
                Message.arm == arm,
                Message.step_index == step_index,
                Message.status == "sent",
            )
        ).all()
        return {int(c): at for c, at in rows}
