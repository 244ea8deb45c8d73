"""The incremental evaluation gives exactly the statistics of a from-scratch one: survival tallies
advanced from stored ones equal a recount (customers assigned and canceled on the very day
boundaries included), and a week of daily evaluations, with new customers, cancellations, cards
and payments arriving between them, equals a from-scratch evaluation every day, on SQLite and
PostgreSQL."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from experiments.loader import parse_spec
from models import balance_sql, daily_aggregates, metric_sql, survival_sql
from models.bulk import table
from models.customer_data import Customer, Invoice, PaymentMethod, Subscription
from models.experiments import register_experiment
from models.records import Assignment
from tests.dbdata import T0
from tests.test_survival_sql import DAY, set_history, setup_experiment

MICRO = timedelta(microseconds=1)
BEFORE = T0 + timedelta(days=50, hours=9, minutes=30)


def boundary_history(engine: Engine, rng: np.random.Generator) -> int:
    """Customers assigned exactly on, a microsecond or a second off, or minutes off whole days
    before ``BEFORE`` (and random times), canceling on their own day boundaries and around
    ``BEFORE``: the cases where a customer's followed days grow by other than whole days."""
    experiment_id, ids = setup_experiment(engine, 160)
    offsets = [timedelta(0), MICRO, -MICRO, timedelta(seconds=1), -timedelta(seconds=1)]
    offsets += [timedelta(minutes=7), -timedelta(minutes=7), timedelta(hours=5)]
    for i, cid in enumerate(ids):
        if i % 4 == 3:
            assigned = T0 + timedelta(seconds=int(rng.integers(0, 52 * 86_400)))
        else:
            days = int(rng.integers(0, 40))
            assigned = BEFORE - days * DAY + offsets[i % len(offsets)]
        cancels = []
        if rng.random() < 0.6:
            e = int(rng.integers(0, 40))
            jitter = [timedelta(0), -MICRO, timedelta(hours=float(rng.uniform(0, 24)))]
            cancels.append(assigned + e * DAY + jitter[int(rng.integers(0, 3))])
        if rng.random() < 0.2:  # around the stored tallies' as_of
            cancels.append(BEFORE + timedelta(hours=float(rng.uniform(-30, 30))))
        set_history(engine, experiment_id, cid, assigned, cancels)
    return experiment_id


@pytest.mark.parametrize("horizon", [7, 30])
def test_advanced_tallies_equal_a_recount(engine: Engine, horizon: int) -> None:
    experiment_id = boundary_history(engine, np.random.default_rng(horizon))
    open_from = daily_aggregates.final_before(BEFORE, horizon)
    with engine.connect() as c:
        stored = survival_sql.survival_rows(c, experiment_id, BEFORE, horizon, open_from)
        steps = [timedelta(0), timedelta(hours=3), DAY, DAY + timedelta(minutes=7)]
        steps += [DAY - timedelta(minutes=7), 3 * DAY + timedelta(hours=5), 12 * DAY]
        for step in steps:
            as_of = BEFORE + step
            want = survival_sql.survival_rows(c, experiment_id, as_of, horizon, open_from)
            got = survival_sql.advance_tallies(
                c, experiment_id, stored, BEFORE, as_of, horizon, open_from
            )
            assert got == want, step
            assert step == timedelta(0) or got != stored  # something did change
        with pytest.raises(ValueError, match="before the stored tallies"):
            survival_sql.advance_tallies(
                c, experiment_id, stored, BEFORE, BEFORE - MICRO, horizon, open_from
            )
        with pytest.raises(ValueError, match="too far from whole days"):
            survival_sql.advance_tallies(
                c, experiment_id, stored, BEFORE, BEFORE + DAY / 2, horizon, open_from
            )


# --- A week of daily evaluations with new data in between -------------------------------------

SPEC = """\
key: daily
hypothesis: h
segment: {where: tenure_days >= 0}
arms: [{name: control}, {name: email}]
metrics: {primary: card_updated_14d}
"""
ARMS = ["control", "email"]
METRICS = ("card_updated_14d", "retained_30d", "revenue_90d", "payment_recovered_14d")
START = T0 + timedelta(days=60)


class World:
    """Customers, assignments and their events, written as the days pass (an invoice owed at
    assignment is written with it, paid in its future: a payment recovered or not)."""

    def __init__(self, engine: Engine, experiment_id: int, rng: np.random.Generator) -> None:
        self.engine, self.experiment_id, self.rng = engine, experiment_id, rng
        self.assigned: dict[int, datetime] = {}
        self.next = 0

    def assign(self, count: int, low: datetime, high: datetime) -> None:
        """``count`` new customers assigned between ``low`` and ``high``, each with an active
        subscription and a card from before."""
        span = (high - low).total_seconds()
        with self.engine.begin() as c:
            for _ in range(count):
                self.next += 1
                at = low + timedelta(seconds=float(self.rng.uniform(0, span)))
                created = at - timedelta(days=float(self.rng.uniform(30, 400)))
                cid = c.execute(
                    table(Customer).insert().values(
                        external_id=f"cus_{self.next:06d}", name="x", created_at=created,
                        sms_consent=bool(self.rng.random() < 0.5),
                    )
                ).inserted_primary_key[0]  # fmt: skip
                c.execute(
                    table(Subscription).insert().values(
                        customer_id=cid, plan="team", billing_interval="month",
                        mrr_cents=int(self.rng.choice([1900, 4900])), status="active",
                        started_at=created, current_period_end=at + 10 * DAY,
                    )
                )  # fmt: skip
                c.execute(
                    table(Assignment).insert().values(
                        experiment_id=self.experiment_id, customer_id=cid,
                        arm=str(self.rng.choice(ARMS)), bucket=0.5, assigned_at=at,
                    )
                )  # fmt: skip
                self.assigned[int(cid)] = at
                if self.rng.random() < 0.4:  # owed at assignment, paid within days or not yet
                    paid = at + timedelta(days=float(self.rng.uniform(-1, 20)))
                    c.execute(
                        table(Invoice).insert().values(
                            customer_id=cid, amount_cents=4900, status="paid",
                            due_at=at - 5 * DAY, paid_at=paid,
                        )
                    )  # fmt: skip

    def happen(self, low: datetime, high: datetime) -> None:
        """Events of the assigned customers between ``low`` and ``high``: cancellations, new
        cards, paid invoices (some dated on the customer's own day boundaries)."""
        span = (high - low).total_seconds()
        subs = table(Subscription)
        with self.engine.begin() as c:
            for cid, at in self.assigned.items():
                if at >= high:
                    continue
                when = max(at, low) + timedelta(seconds=float(self.rng.uniform(0, span)))
                when = min(when, high)
                if self.rng.random() < 0.03:
                    whole = at + math.ceil((when - at) / DAY) * DAY  # exactly a whole day after
                    c.execute(
                        subs.update()
                        .where(subs.c.customer_id == cid, subs.c.canceled_at.is_(None))
                        .values(canceled_at=whole if whole < high else when, status="canceled")
                    )
                if self.rng.random() < 0.05:
                    c.execute(
                        table(PaymentMethod).insert().values(
                            customer_id=cid, last4="4242", exp_month=1, exp_year=2030,
                            expires_on=datetime(2030, 1, 31).date(), created_at=when,
                        )
                    )  # fmt: skip
                if self.rng.random() < 0.1:
                    c.execute(
                        table(Invoice).insert().values(
                            customer_id=cid, amount_cents=int(self.rng.integers(100, 9900)),
                            status="paid", due_at=when, paid_at=when,
                        )
                    )  # fmt: skip


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def keep(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    return seen


def test_daily_evaluations_with_new_data_equal_a_from_scratch_evaluation(engine: Engine) -> None:
    loaded = parse_spec(SPEC, "daily.yaml")
    experiment_id = register_experiment(engine, loaded, START - 100 * DAY).experiment_id
    world = World(engine, experiment_id, np.random.default_rng(7))
    world.assign(160, START - 95 * DAY, START)
    world.happen(START - 95 * DAY, START)
    seen = statements(engine)
    # Daily runs at 09:00 give or take minutes (advancing the stored tallies), a skipped
    # weekend, one back in time (a recount, nothing stored), one in the evening (too far from
    # whole days: a recount) and the next morning's (too far from the evening's: a recount).
    runs = [(0, 0, False), (1, 4, True), (2, -3, True), (3, -3, True), (6, 11, True)]
    runs += [(2, -540, False), (7, 0, True), (7, 600, False), (8, 2, False), (9, 0, True)]
    previous = START
    for day, minutes, expect_advance in runs:
        as_of = START + day * DAY + timedelta(hours=9, minutes=minutes)
        if as_of > previous:  # the data of the day before this evaluation arrives
            world.assign(12, previous, as_of)
            world.happen(previous, as_of)
            previous = as_of
        seen.clear()
        got = daily_aggregates.survival_statistics(engine, experiment_id, as_of, 30)
        assert got == survival_sql.survival_counts(engine, experiment_id, as_of, 30), as_of
        assert any(" recent" in s for s in seen) == expect_advance, as_of
        for name in METRICS:
            stats = daily_aggregates.metric_statistics(
                engine, experiment_id, name, as_of, ARMS, lookback_days=14.0
            )
            want = metric_sql.paired_statistics(engine, experiment_id, name, as_of, 14.0)
            assert set(stats) == set(want), (name, as_of)
            for arm, m in stats.items():
                p = m.paired()
                assert p.n == want[arm].n, (name, as_of, arm)
                for f in ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy"):
                    assert close(getattr(p, f), getattr(want[arm], f)), (name, as_of, arm, f)
        if engine.dialect.name == "postgresql" and expect_advance:
            # The newly matured customers' events were looked up by index.
            assert any("LATERAL" in s for s in seen), as_of
        covariates = daily_aggregates.covariate_statistics(engine, experiment_id, as_of, ARMS)
        whole = balance_sql.covariate_statistics(engine, experiment_id)
        assert set(covariates) == set(whole)
        for name, arms in covariates.items():
            for arm, s in arms.items():
                w = whole[name][arm]
                assert s.n == w.n and close(s.sum, w.sum), (name, arm, as_of)
                assert close(s.centered_sum_squares, w.centered_sum_squares), (name, arm)
    with engine.connect() as c:
        days = table(daily_aggregates.SurvivalDay)
        stored = c.execute(select(days.c.day).distinct()).scalars().all()
    assert len(stored) > 30  # final and open cohorts' tallies are stored
