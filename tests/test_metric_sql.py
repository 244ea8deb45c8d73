"""Metric SQL: per-arm sufficient statistics equal a Python recount of the same rows."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from experiments.loader import parse_spec
from experiments.metrics import CATALOGUE
from models.customer_data import ActivityEvent, Invoice, PaymentMethod, Subscription
from models.experiments import assign_customers, register_experiment
from models.metric_sql import BUILDERS, arm_statistics, metric_values
from models.records import Assignment, OfferGrant, Suppression
from tests.dbdata import T0, add_customers

SPEC = """\
key: metrics-check
hypothesis: h
segment: {where: tenure_days >= 0}
arms: [{name: control}, {name: treat}]
metrics: {primary: retained_30d}
"""


def test_every_catalogue_metric_has_sql() -> None:
    assert set(BUILDERS) == set(CATALOGUE)


def _random_history(
    engine: Engine, ids: list[int], rng: np.random.Generator
) -> dict[str, dict[int, float]]:
    """Write events around the window edges and return the Python-computed metric per customer."""
    expected: dict[str, dict[int, float]] = {name: {} for name in CATALOGUE}
    offsets = [-1.0, 0.0, 0.5, 13.99, 14.0, 29.9, 30.0, 59.0, 60.5, 89.9, 90.0, 120.0]
    with Session(engine) as session:
        for cid in ids:
            card = float(rng.choice(offsets)) if rng.random() < 0.5 else None
            milestone = float(rng.choice(offsets)) if rng.random() < 0.5 else None
            accepted = float(rng.choice(offsets)) if rng.random() < 0.4 else None
            canceled = float(rng.choice(offsets)) if rng.random() < 0.5 else None
            unsub = float(rng.choice(offsets)) if rng.random() < 0.3 else None
            paid = [(float(rng.choice(offsets)), int(rng.integers(100, 10_000))) for _ in range(3)]
            if card is not None:
                session.add(
                    PaymentMethod(
                        customer_id=cid,
                        last4="4242",
                        exp_month=1,
                        exp_year=2030,
                        expires_on=date(2030, 1, 31),
                        created_at=T0 + timedelta(days=card),
                    )
                )
            if milestone is not None:
                session.add(
                    ActivityEvent(
                        customer_id=cid,
                        kind="milestone",
                        name="onboarding_completed",
                        occurred_at=T0 + timedelta(days=milestone),
                    )
                )
                # Same time, other milestone: must not count.
                session.add(
                    ActivityEvent(
                        customer_id=cid,
                        kind="milestone",
                        name="invited_team",
                        occurred_at=T0 + timedelta(days=milestone),
                    )
                )
            if accepted is not None:
                session.add(
                    OfferGrant(
                        experiment_id=1,
                        customer_id=cid,
                        offer_kind="pause",
                        months=1,
                        offered_at=T0,
                        accepted_at=T0 + timedelta(days=accepted),
                    )
                )
            if canceled is not None:
                sub = session.exec(
                    __import__("sqlmodel")
                    .select(Subscription)
                    .where(Subscription.customer_id == cid)
                ).one()
                sub.canceled_at = T0 + timedelta(days=canceled)
                sub.status = "canceled"
                session.add(sub)
            if unsub is not None:
                session.add(
                    Suppression(
                        customer_id=cid,
                        channel="email",
                        reason="unsubscribe",
                        created_at=T0 + timedelta(days=unsub),
                    )
                )
            for day, cents in paid:
                status = "paid" if rng.random() < 0.8 else "failed"
                session.add(
                    Invoice(
                        customer_id=cid,
                        amount_cents=cents,
                        status=status,
                        due_at=T0 + timedelta(days=day),
                        paid_at=T0 + timedelta(days=day) if status == "paid" else None,
                    )
                )

            if rng.random() < 0.6:  # a renewal two days before assignment, failed or paid late
                late = float(rng.choice(offsets)) if rng.random() < 0.7 else None
                session.add(
                    Invoice(
                        customer_id=cid,
                        amount_cents=4_900,
                        status="paid" if late is not None else str(rng.choice(["failed", "void"])),
                        due_at=T0 - timedelta(days=2),
                        paid_at=T0 + timedelta(days=late) if late is not None else None,
                    )
                )

            def within(day: float | None, window: int) -> bool:
                return day is not None and 0 <= day < window

            expected["card_updated_14d"][cid] = float(within(card, 14))
            expected["onboarding_completed_14d"][cid] = float(within(milestone, 14))
            expected["offer_accepted_14d"][cid] = float(within(accepted, 14))
            for window in (30, 60, 90):
                expected[f"retained_{window}d"][cid] = float(not within(canceled, window))
            expected["unsubscribed_30d"][cid] = float(within(unsub, 30))
            expected["revenue_90d"][cid] = 0.0  # filled from the invoices written below
        session.commit()
        for invoice in session.exec(select(Invoice)).all():
            day = (invoice.paid_at - T0).total_seconds() / 86400 if invoice.paid_at else None
            if invoice.status == "paid" and within(day, 90):
                expected["revenue_90d"][invoice.customer_id] += invoice.amount_cents / 100
        for cid in ids:
            invoices = session.exec(select(Invoice).where(Invoice.customer_id == cid)).all()
            owed = any(
                i.due_at < T0 and i.status != "void" and (i.paid_at is None or i.paid_at >= T0)
                for i in invoices
            )
            recovered = any(
                i.status == "paid"
                and i.paid_at is not None
                and within((i.paid_at - T0).total_seconds() / 86400, 14)
                for i in invoices
            )
            expected["payment_recovered_14d"][cid] = float(owed and recovered)
        assert 0 < sum(expected["payment_recovered_14d"].values()) < len(ids)
    # No messages were sent and offers cost nothing by default: net revenue is revenue.
    expected["net_revenue_90d"] = dict(expected["revenue_90d"])
    return expected


def test_sql_aggregates_equal_python_recount(engine: Engine) -> None:
    rng = np.random.default_rng(11)
    ids = add_customers(engine, 80)
    loaded = parse_spec(SPEC, "m.yaml")
    reg = register_experiment(engine, loaded, T0)
    assert reg.experiment_id == 1  # the OfferGrant rows above refer to it
    assign_customers(engine, reg.experiment_id, loaded.spec, ids, T0)
    expected = _random_history(engine, ids, rng)
    with Session(engine) as session:
        arms = {a.customer_id: a.arm for a in session.exec(select(Assignment))}
    as_of = T0 + timedelta(days=100)
    for name in CATALOGUE:
        values = metric_values(engine, reg.experiment_id, name, as_of)
        assert {c: v for c, (_, v) in values.items()} == pytest.approx(expected[name]), name
        stats = arm_statistics(engine, reg.experiment_id, name, as_of)
        for arm in ("control", "treat"):
            mine = [expected[name][c] for c in ids if arms[c] == arm]
            assert stats[arm].n == len(mine)
            assert stats[arm].sum == pytest.approx(sum(mine))
            shift = stats[arm].shift
            assert stats[arm].sum_squares == pytest.approx(sum((v - shift) ** 2 for v in mine))


def test_immature_windows_and_future_events_are_excluded(engine: Engine) -> None:
    ids = add_customers(engine, 6)
    loaded = parse_spec(SPEC, "m.yaml")
    reg = register_experiment(engine, loaded, T0)
    assign_customers(engine, reg.experiment_id, loaded.spec, ids[:3], T0)
    assign_customers(engine, reg.experiment_id, loaded.spec, ids[3:], T0 + timedelta(days=20))
    with Session(engine) as session:
        session.add(
            PaymentMethod(
                customer_id=ids[0],
                last4="1111",
                exp_month=1,
                exp_year=2030,
                expires_on=date(2030, 1, 31),
                created_at=T0 + timedelta(days=5),
            )
        )
        session.commit()
    as_of: datetime = T0 + timedelta(days=35)
    # retained_30d: only the first three have a matured 30-day window.
    assert (
        sum(s.n for s in arm_statistics(engine, reg.experiment_id, "retained_30d", as_of).values())
        == 3
    )
    assert (
        sum(
            s.n
            for s in arm_statistics(engine, reg.experiment_id, "card_updated_14d", as_of).values()
        )
        == 6
    )
    # Looking at day 4, the card update on day 5 has not happened yet, and no window has matured.
    early = T0 + timedelta(days=4)
    assert arm_statistics(engine, reg.experiment_id, "card_updated_14d", early) == {}
    later = metric_values(engine, reg.experiment_id, "card_updated_14d", as_of)
    assert later[ids[0]][1] == 1.0 and sum(v for _, v in later.values()) == 1.0


def test_net_revenue_subtracts_message_and_offer_costs(engine: Engine) -> None:
    from datetime import UTC

    from experiments.spec import Costs
    from models.records import Message

    ids = add_customers(engine, 4)
    loaded = parse_spec(SPEC, "m.yaml")
    reg = register_experiment(engine, loaded, T0)
    assign_customers(engine, reg.experiment_id, loaded.spec, ids, T0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        for i, (channel, day, status) in enumerate(
            [("email", 0, "sent"), ("sms", 3, "sent"), ("sms", 4, "skipped"), ("email", 95, "sent")]
        ):
            session.add(
                Message(
                    idempotency_key=f"k{i}",
                    experiment_id=reg.experiment_id,
                    customer_id=ids[0],
                    arm="treat",
                    step_index=i,
                    channel=channel,
                    template="card_expiry",
                    scheduled_at=T0,
                    status=status,
                    sent_at=T0 + timedelta(days=day),
                    created_at=now,
                    updated_at=now,
                )
            )
        session.add(
            OfferGrant(
                experiment_id=reg.experiment_id,
                customer_id=ids[1],
                offer_kind="discount",
                percent_off=30,
                months=3,
                offered_at=T0,
                accepted_at=T0 + timedelta(days=1),
            )
        )
        session.add(
            Invoice(
                customer_id=ids[1],
                amount_cents=4900,
                status="paid",
                due_at=T0 + timedelta(days=2),
                paid_at=T0 + timedelta(days=2),
            )
        )
        session.commit()
    costs = Costs(email=0.25, sms=1.5, offer={"discount": 10.0})
    values = metric_values(
        engine, reg.experiment_id, "net_revenue_90d", T0 + timedelta(days=100), costs
    )
    # Customer 0: one email (0.25) and one SMS (1.5) sent in the window; the skipped SMS and the
    # email on day 95 do not count. Customer 1: 49.00 paid minus a 10.00 accepted discount.
    assert values[ids[0]][1] == pytest.approx(-1.75)
    assert values[ids[1]][1] == pytest.approx(39.0)
    assert values[ids[2]][1] == 0.0
