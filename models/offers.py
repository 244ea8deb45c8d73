"""Offer grants: the offer an arm made to a customer, with the customer's own code, recorded once
the message carrying it was sent (an offer nobody received was never made)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from experiments.loader import SpecError, parse_spec
from messaging.links import offer_code
from models.bulk import insert_ignoring_conflicts, table
from models.customer_data import Customer
from models.records import Experiment, ExperimentSnapshot, Message, OfferGrant


def _latest_specs(engine: Engine) -> dict[int, tuple[str, str]]:
    """experiment id -> (key, YAML of its latest snapshot)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(col(Experiment.id), col(Experiment.key), col(ExperimentSnapshot.spec_yaml))
            .join(ExperimentSnapshot, col(ExperimentSnapshot.experiment_id) == col(Experiment.id))
            .order_by(col(ExperimentSnapshot.created_at), col(ExperimentSnapshot.id))
        ).all()
    return {int(eid): (key, spec_yaml) for eid, key, spec_yaml in rows}


def grant_sent_offers(engine: Engine, now: datetime) -> int:
    """Record an offer grant (with its code, :func:`messaging.links.offer_code`) for every customer
    who was sent a message of an arm with an ``offer`` by ``now`` and has none yet; returns how
    many were added. Safe to repeat: one grant per experiment, customer and offer kind."""
    added = 0
    for experiment_id, (key, spec_yaml) in _latest_specs(engine).items():
        try:
            spec = parse_spec(spec_yaml, f"<snapshot of {key}>").spec
        except SpecError:
            continue  # the dispatcher reports invalid snapshots; nothing was sent from them
        offers = {arm.name: arm.offer for arm in spec.arms if arm.offer is not None}
        if not offers:
            continue
        with engine.begin() as conn:
            sent = conn.execute(
                select(
                    col(Message.customer_id),
                    col(Message.arm),
                    col(Customer.external_id),
                    func.min(col(Message.sent_at)),
                )
                .join(Customer, col(Customer.id) == col(Message.customer_id))
                .where(
                    col(Message.experiment_id) == experiment_id,
                    col(Message.status) == "sent",
                    col(Message.arm).in_(sorted(offers)),
                    col(Message.sent_at) <= now,
                )
                .group_by(col(Message.customer_id), col(Message.arm), col(Customer.external_id))
            ).all()
            rows = []
            for customer_id, arm, external_id, sent_at in sent:
                offer = offers[arm]
                rows.append(
                    {
                        "experiment_id": experiment_id,
                        "customer_id": customer_id,
                        "offer_kind": offer.kind,
                        "percent_off": offer.percent,
                        "months": offer.months,
                        "offered_at": sent_at,
                        "cost_cents": 0,
                        "code": offer_code(key, external_id, offer.kind),
                    }
                )
            added += insert_ignoring_conflicts(
                conn, table(OfferGrant), rows, ["experiment_id", "customer_id", "offer_kind"]
            )
    return added
