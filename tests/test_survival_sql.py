"""Survival counts in SQL: per arm, day and event flag they equal a Python recount of the same
customers, on hand-built edge cases and on random staggered data."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from experiments.loader import parse_spec
from experiments.stats.survival import SurvivalCounts, kaplan_meier
from models.customer_data import Subscription
from models.experiments import assign_customers, register_experiment
from models.metric_sql import arm_statistics
from models.records import Assignment
from models.survival_sql import survival_counts
from tests.dbdata import T0, add_customers

SPEC = """\
key: survival-check
hypothesis: h
segment: {where: tenure_days >= 0}
arms: [{name: control}, {name: treat}]
metrics: {primary: retained_30d}
"""

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def setup_experiment(engine: Engine, count: int) -> tuple[int, list[int]]:
    ids = add_customers(engine, count)
    loaded = parse_spec(SPEC, "s.yaml")
    experiment_id = register_experiment(engine, loaded, T0).experiment_id
    assign_customers(engine, experiment_id, loaded.spec, ids, T0)
    return experiment_id, ids


def set_history(
    engine: Engine,
    experiment_id: int,
    customer_id: int,
    assigned_at: datetime,
    cancellations: list[datetime],
    arm: str | None = None,
) -> None:
    """Move the customer's assignment and give them one canceled subscription per cancellation
    (the first reuses the subscription ``add_customers`` created)."""
    values: dict[str, object] = {"assigned_at": assigned_at}
    if arm is not None:
        values["arm"] = arm
    with Session(engine) as session:
        session.execute(
            update(Assignment)
            .where(
                Assignment.experiment_id == experiment_id,  # type: ignore[arg-type]
                Assignment.customer_id == customer_id,  # type: ignore[arg-type]
            )
            .values(**values)
        )
        first = session.exec(
            select(Subscription).where(Subscription.customer_id == customer_id)
        ).one()
        for i, at in enumerate(cancellations):
            sub = first if i == 0 else Subscription(**first.model_dump(exclude={"id"}))
            sub.canceled_at, sub.status = at, "canceled"
            session.add(sub)
        session.commit()


def recount(
    history: dict[int, tuple[str, datetime, list[datetime]]], as_of: datetime, horizon: int
) -> dict[str, SurvivalCounts]:
    """The module's definition, in Python: whole days elapsed, first cancellation after
    assignment, event if on a day fully elapsed within the horizon, else censored on the last."""
    cells: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for arm, assigned_at, cancellations in history.values():
        followed = min((as_of - assigned_at) // DAY, horizon)
        if followed < 1:
            continue
        after = [c for c in cancellations if c >= assigned_at]
        churn_day = (min(after) - assigned_at) // DAY if after else None
        if churn_day is not None and churn_day < followed:
            cells[arm][churn_day][0] += 1
        else:
            cells[arm][followed - 1][1] += 1
    return {
        arm: SurvivalCounts(
            tuple(sorted(by_day)),
            tuple(by_day[d][0] for d in sorted(by_day)),
            tuple(by_day[d][1] for d in sorted(by_day)),
        )
        for arm, by_day in cells.items()
    }


# (arm, assigned at (days after T0), cancellations (days after assignment), meaning)
AS_OF = T0 + 40 * DAY
EDGE_CASES: list[tuple[str, timedelta, list[timedelta], str]] = [
    ("control", 30 * DAY, [], "assigned exactly 10 days ago: days 0-9 seen -> censored day 9"),
    ("control", 29.5 * DAY, [10.2 * DAY], "churned in day 10, still in progress -> censored 9"),
    ("control", 0 * DAY, [3 * DAY], "exactly 3 days after -> event day 3"),
    ("control", 0 * DAY, [3 * DAY - SECOND], "a second before 3 days -> event day 2"),
    ("control", 0 * DAY, [0 * DAY], "canceled at the moment of assignment -> event day 0"),
    ("control", 0 * DAY, [-1 * DAY], "canceled before assignment: ignored -> censored 29"),
    ("control", 0 * DAY, [-5 * DAY, 5.5 * DAY], "second subscription -> event day 5"),
    ("control", 0 * DAY, [12 * DAY, 7 * DAY], "earliest of two cancellations -> event day 7"),
    ("control", 0 * DAY, [30 * DAY], "at the horizon -> censored day 29"),
    ("control", 0 * DAY, [30 * DAY - SECOND], "a second before the horizon -> event day 29"),
    ("treat", 35 * DAY, [6 * DAY], "canceled after as_of -> censored day 4"),
    ("treat", 39.5 * DAY, [], "half a day of follow-up: no whole day yet -> left out"),
    ("treat", 41 * DAY, [0.5 * DAY], "assigned after as_of -> left out"),
    ("treat", 39 * DAY, [0.5 * DAY], "one whole day, churned in it -> event day 0"),
    ("treat", 20 * DAY, [20 * DAY], "canceled exactly at as_of -> censored day 19"),
]


def test_edge_cases_by_hand(engine: Engine) -> None:
    experiment_id, ids = setup_experiment(engine, len(EDGE_CASES))
    history = {}
    for cid, (arm, assigned, cancels, _) in zip(ids, EDGE_CASES, strict=True):
        assigned_at = T0 + assigned
        history[cid] = (arm, assigned_at, [assigned_at + c for c in cancels])
        set_history(engine, experiment_id, cid, assigned_at, history[cid][2], arm)
    expected = {
        "control": SurvivalCounts(
            days=(0, 2, 3, 5, 7, 9, 29),
            events=(1, 1, 1, 1, 1, 0, 1),
            censored=(0, 0, 0, 0, 0, 2, 2),
        ),
        "treat": SurvivalCounts(days=(0, 4, 19), events=(1, 0, 0), censored=(0, 1, 1)),
    }
    assert survival_counts(engine, experiment_id, AS_OF, horizon_days=30) == expected
    assert recount(history, AS_OF, 30) == expected
    # A shorter horizon censors everyone still followed at its end on its last day (day 4).
    short = survival_counts(engine, experiment_id, AS_OF, horizon_days=5)
    assert short == recount(history, AS_OF, 5)
    assert short["control"] == SurvivalCounts((0, 2, 3, 4), (1, 1, 1, 0), (0, 0, 0, 7))
    # Before anyone was assigned, nothing is counted.
    assert survival_counts(engine, experiment_id, T0, horizon_days=30) == {}


def test_sql_counts_equal_python_recount_on_random_staggered_data(engine: Engine) -> None:
    rng = np.random.default_rng(3)
    experiment_id, ids = setup_experiment(engine, 150)
    with Session(engine) as session:
        arms = {a.customer_id: a.arm for a in session.exec(select(Assignment))}
    boundaries = [-2.0, 0.0, 0.5, 1.0, 7.0, 13.999, 14.0, 29.5, 30.0, 45.0, 89.9, 90.0, 95.0]
    history = {}
    for cid in ids:
        assigned_at = T0 + timedelta(seconds=int(rng.integers(0, 50 * 86_400)))
        cancels = []
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            if rng.random() < 0.5:
                offset = timedelta(days=float(rng.choice(boundaries)))
            else:
                offset = timedelta(seconds=int(rng.integers(-86_400, 100 * 86_400)))
            cancels.append(assigned_at + offset)
        history[cid] = (arms[cid], assigned_at, cancels)
        set_history(engine, experiment_id, cid, assigned_at, cancels)
    for as_of_days, horizon in [(20, 7), (45.25, 30), (45.25, 90), (160, 90)]:
        as_of = T0 + timedelta(days=as_of_days)
        got = survival_counts(engine, experiment_id, as_of, horizon_days=horizon)
        assert got == recount(history, as_of, horizon), (as_of_days, horizon)
        assert sum(sum(c.events) for c in got.values()) > 0


def test_fully_matured_curve_agrees_with_the_retained_metric(engine: Engine) -> None:
    """With every 30-day window complete, S(29) is the share retained_30d counts as retained."""
    rng = np.random.default_rng(5)
    experiment_id, ids = setup_experiment(engine, 60)
    for cid in ids:
        assigned_at = T0 + timedelta(hours=int(rng.integers(0, 240)))
        cancels = [assigned_at + timedelta(hours=int(rng.integers(-48, 60 * 24)))]
        set_history(engine, experiment_id, cid, assigned_at, cancels if rng.random() < 0.7 else [])
    as_of = T0 + 100 * DAY
    counts = survival_counts(engine, experiment_id, as_of, horizon_days=30)
    retained = arm_statistics(engine, experiment_id, "retained_30d", as_of)
    assert set(counts) == set(retained) == {"control", "treat"}
    for arm, stats in retained.items():
        km = kaplan_meier(counts[arm])
        assert km.at_risk[0] == stats.n
        assert km.days[-1] == 29
        assert km.survival[-1] == pytest.approx(stats.mean, rel=1e-12)


def test_bad_arguments(engine: Engine) -> None:
    with pytest.raises(ValueError, match="horizon_days must be a whole number >= 1"):
        survival_counts(engine, 1, AS_OF, horizon_days=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        survival_counts(engine, 1, AS_OF.replace(tzinfo=None))
