"""The single-pass aggregates equal the previous per-customer subqueries (kept in
``tests/legacy_aggregates.py``) and a Python recount, on the synthetic business with staggered
assignments, on SQLite and PostgreSQL, to 1e-9; stored daily aggregates equal a full recount at
every evaluation; shifted sums keep the variance of values near 1e9."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

import tests.legacy_aggregates as legacy
from experiments.loader import parse_spec
from experiments.simulation.business import BusinessConfig, generate_business
from experiments.spec import Costs
from experiments.stats import SampleStats
from models import balance_sql, daily_aggregates, metric_sql, survival_sql
from models.bulk import table
from models.customer_data import Customer, Invoice
from models.experiments import assign_customers, register_experiment
from models.records import Assignment, Message, OfferGrant
from models.seed import seed_business

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SPEC = """\
key: aggregates
hypothesis: h
segment: {where: tenure_days >= 0}
arms: [{name: control}, {name: email}, {name: offer}]
metrics: {primary: retained_30d}
"""
ARMS = ["control", "email", "offer"]
COSTS = Costs(email=0.25, sms=1.5, offer={"discount": 12.0, "pause": 3.0})
REL = 1e-9


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-6)


def same_sample(got: SampleStats, want: SampleStats) -> bool:
    return (
        got.n == want.n
        and close(got.sum, want.sum)
        and close(got.centered_sum_squares, want.centered_sum_squares)
    )


@pytest.fixture
def demo(engine: Engine) -> tuple[int, dict[int, tuple[str, datetime]]]:
    """The synthetic business (its subscriptions, invoices, cards, activity, suppressions), an
    experiment whose customers were assigned over the 120 days before ``T0``, and messages and
    offers for the net revenue."""
    business = generate_business(BusinessConfig(customers=500, seed=11, as_of=T0))
    seed_business(engine, business)
    loaded = parse_spec(SPEC, "aggregates.yaml")
    experiment_id = register_experiment(engine, loaded, T0 - timedelta(days=130)).experiment_id
    with engine.connect() as c:
        ids = [
            int(i)
            for i in c.execute(
                table(Customer).select().with_only_columns(table(Customer).c.id)
            ).scalars()
        ]
    assign_customers(engine, experiment_id, loaded.spec, ids, T0 - timedelta(days=130))
    rng = np.random.default_rng(5)
    a = table(Assignment)
    assigned: dict[int, tuple[str, datetime]] = {}
    with engine.begin() as c:
        arms = dict(c.execute(a.select().with_only_columns(a.c.customer_id, a.c.arm)).all())
        for cid in ids:
            at = T0 - timedelta(days=float(rng.uniform(1, 120)))
            c.execute(update(a).where(a.c.customer_id == cid).values(assigned_at=at))
            assigned[cid] = (arms[cid], at)
        messages, offers = [], []
        for cid, (arm, at) in assigned.items():
            if arm != "control":
                for step, channel in enumerate(["email", "sms"]):
                    sent = at + timedelta(days=float(rng.uniform(-1, 100)))
                    messages.append(
                        {
                            "experiment_id": experiment_id, "customer_id": cid, "arm": arm,
                            "step_index": step, "channel": channel, "template": "t",
                            "idempotency_key": f"{cid}:{step}", "scheduled_at": sent,
                            "status": "sent" if rng.random() < 0.8 else "failed",
                            "sent_at": sent, "attempts": 1, "created_at": at, "updated_at": at,
                        }
                    )  # fmt: skip
            if arm == "offer" and rng.random() < 0.6:
                offers.append(
                    {
                        "experiment_id": experiment_id, "customer_id": cid,
                        "offer_kind": str(rng.choice(["discount", "pause"])), "offered_at": at, "months": 1,
                        "accepted_at": at + timedelta(days=float(rng.uniform(-2, 40))),
                        "cost_cents": 0,
                    }
                )  # fmt: skip
        c.execute(table(Message).insert(), messages)
        c.execute(table(OfferGrant).insert(), offers)
    return experiment_id, assigned


def test_metrics_equal_the_per_customer_subqueries(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    experiment_id, _ = demo
    for name in legacy.BUILDERS:  # the metrics the old code knew (newer ones: test_metric_sql)
        old = legacy.paired_statistics(engine, experiment_id, name, T0, 21, COSTS)
        new = metric_sql.paired_statistics(engine, experiment_id, name, T0, 21, COSTS)
        assert set(new) == set(old) == set(ARMS), name
        for arm in ARMS:
            o, p = old[arm], new[arm]
            assert p.n == o.n > 0, (name, arm)
            for f in ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy"):
                assert close(getattr(p, f), getattr(o, f)), (name, arm, f)
        plain = metric_sql.arm_statistics(engine, experiment_id, name, T0, COSTS)
        assert all(same_sample(plain[arm], old[arm].outcome) for arm in ARMS), name


def test_revenue_equals_a_python_recount(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    experiment_id, assigned = demo
    inv = table(Invoice)
    with engine.connect() as c:
        rows = c.execute(
            inv.select().with_only_columns(
                inv.c.customer_id, inv.c.status, inv.c.amount_cents, inv.c.paid_at
            )
        ).all()
    revenue: dict[int, float] = defaultdict(float)
    for cid, status, cents, paid_at in rows:
        if cid in assigned and status == "paid" and paid_at is not None:
            elapsed = (paid_at - assigned[cid][1]).total_seconds() / 86400
            if 0 <= elapsed < 90 and paid_at < T0:
                revenue[cid] += cents / 100
    per_arm: dict[str, list[float]] = defaultdict(list)
    for cid, (arm, at) in assigned.items():
        if (T0 - at).total_seconds() / 86400 >= 90:
            per_arm[arm].append(revenue[cid])
    got = metric_sql.arm_statistics(engine, experiment_id, "revenue_90d", T0)
    assert sum(s.sum for s in got.values()) > 0
    for arm, values in per_arm.items():
        want = SampleStats(len(values), sum(values), sum(v * v for v in values))
        assert same_sample(got[arm], want), arm


def test_survival_and_covariates_equal_the_subqueries(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    experiment_id, _ = demo
    for horizon in (30, 90):
        old = legacy.survival_counts(engine, experiment_id, T0, horizon)
        assert survival_sql.survival_counts(engine, experiment_id, T0, horizon) == old
        assert sum(sum(c.events) for c in old.values()) > 0
    old_cov = legacy.covariate_statistics(engine, experiment_id)
    new_cov = balance_sql.covariate_statistics(engine, experiment_id)
    assert set(new_cov) == set(old_cov)
    for name, arms in old_cov.items():
        assert all(same_sample(new_cov[name][arm], arms[arm]) for arm in ARMS), name


def test_daily_evaluations_from_stored_days_equal_a_full_recount(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    experiment_id, _ = demo
    days = [T0 - timedelta(days=40), T0 - timedelta(days=39, hours=5), T0 - timedelta(days=20)]
    days += [T0 - timedelta(days=60), T0]  # an evaluation before the stored mark, then today
    for as_of in days:
        for name in ("card_updated_14d", "retained_30d", "net_revenue_90d"):
            got = daily_aggregates.metric_statistics(
                engine, experiment_id, name, as_of, ARMS, costs=COSTS, lookback_days=14.0
            )
            want = legacy.paired_statistics(engine, experiment_id, name, as_of, 14.0, COSTS)
            assert set(got) == set(want), (name, as_of)
            for arm, m in got.items():
                p = m.paired()
                assert p.n == want[arm].n, (name, as_of, arm)
                for f in ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy"):
                    assert close(getattr(p, f), getattr(want[arm], f)), (name, as_of, arm, f)
        survival = daily_aggregates.survival_statistics(engine, experiment_id, as_of, 30)
        assert survival == legacy.survival_counts(engine, experiment_id, as_of, 30), as_of
        covariates = daily_aggregates.covariate_statistics(engine, experiment_id, as_of, ARMS)
        old_cov = legacy.covariate_statistics(engine, experiment_id)
        for name, arms in old_cov.items():
            assert all(same_sample(covariates[name][a], arms[a]) for a in ARMS), (name, as_of)
    with engine.connect() as c:
        stored = c.execute(table(daily_aggregates.MetricDay).select()).all()
    assert len(stored) > 100  # the later evaluations really read stored days


def test_cumulative_series_adds_up_the_final_days(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    experiment_id, assigned = demo
    daily_aggregates.metric_statistics(engine, experiment_id, "retained_30d", T0, ARMS)
    series = daily_aggregates.cumulative_series(engine, experiment_id, "retained_30d")
    values = metric_sql.metric_values(engine, experiment_id, "retained_30d", T0)
    final = daily_aggregates.final_before(T0, 30)
    assert series and series[-1].day < final
    for point in [*series[:: max(1, len(series) // 7)], series[-1]]:
        for arm in ARMS:
            vs = [
                v
                for cid, (a, v) in values.items()
                if a == arm and assigned[cid][1].date() <= point.day
            ]
            want = SampleStats(len(vs), sum(vs), sum(v * v for v in vs))
            got = point.arms.get(arm, SampleStats(0, 0.0, 0.0))
            assert same_sample(got, want), (point.day, arm)
    assert daily_aggregates.cumulative_series(engine, experiment_id, "revenue_90d") == []


def test_shifted_sums_keep_the_variance_of_values_near_1e9(
    engine: Engine, demo: tuple[int, dict[int, tuple[str, datetime]]]
) -> None:
    """Revenue of about one billion dollars per customer that differs by 0 or 1 dollar: sums of
    squares around zero would leave no digit of the variance; around the arm's shift they keep
    all of it."""
    experiment_id, assigned = demo
    rng = np.random.default_rng(2)
    extra = {cid: int(rng.integers(0, 2)) for cid in assigned}
    # amount_cents is a 32-bit integer: fifty invoices of $20,000,000 make the billion.
    rows = [
        {
            "customer_id": cid, "amount_cents": cents, "status": "paid", "attempts": 1,
            "due_at": at + timedelta(hours=1), "paid_at": at + timedelta(hours=1),
        }
        for cid, (_arm, at) in assigned.items()
        for cents in [2_000_000_000] * 50 + [100] * extra[cid]
    ]  # fmt: skip
    with engine.begin() as c:
        c.execute(table(Invoice).insert(), rows)
    before = {
        arm: m
        for arm, m in daily_aggregates.metric_statistics(
            engine, experiment_id, "revenue_90d", T0 - timedelta(days=300), ARMS
        ).items()
    }
    assert before == {}
    got = daily_aggregates.metric_statistics(engine, experiment_id, "revenue_90d", T0, ARMS)
    values = metric_sql.metric_values(engine, experiment_id, "revenue_90d", T0)
    for arm in ARMS:
        vs = np.array([v for a, v in values.values() if a == arm])
        assert vs.min() >= 1e9
        assert np.var(vs - 1e9, ddof=1) > 0.1
        assert math.isclose(got[arm].variance, float(np.var(vs - 1e9, ddof=1)), rel_tol=1e-9)
        assert math.isclose(got[arm].mean, float(np.mean(vs)), rel_tol=1e-12)
        # ... and so does what the statistics engine receives (SampleStats around the shift).
        sample = got[arm].sample()
        assert math.isclose(sample.variance, float(np.var(vs - 1e9, ddof=1)), rel_tol=1e-9)


def test_evaluation_day_arithmetic() -> None:
    assert daily_aggregates.final_before(datetime(2026, 3, 20, 0, 0, 30, tzinfo=UTC), 14) == date(
        2026, 3, 5
    )
    assert daily_aggregates.final_before(datetime(2026, 3, 20, 9, tzinfo=UTC), 14) == date(
        2026, 3, 6
    )


def test_seeding_leaves_planner_statistics(engine: Engine) -> None:
    """``seed_business`` ends with ``analyze``: both planners know the tables' sizes."""
    seed_business(engine, generate_business(BusinessConfig(customers=60, seed=3, as_of=T0)))
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            rows = c.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = 'customers'").all()
            assert rows and all(int(stat.split()[0]) == 60 for (stat,) in rows)
        else:
            tuples = c.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'customers'"
            ).scalar()
            assert tuples == 60
