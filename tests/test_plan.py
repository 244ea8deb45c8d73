"""`retain plan`: segment size, inflow and baseline from the data, then the sample size."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from experiments.loader import load_spec
from experiments.rules import parse_rule
from experiments.simulation.business import BusinessConfig, generate_business
from experiments.stats.power import sample_size_per_arm
from flows.plan import plan_experiment
from models.customer_data import ActivityEvent
from models.seed import seed_business
from models.segments import select_segment

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"


def test_plan_uses_the_segment_and_a_replayed_baseline(engine: Engine) -> None:
    business = generate_business(BusinessConfig(customers=3_000, seed=2))
    seed_business(engine, business)
    as_of = business.config.as_of
    spec = load_spec(DEFINITIONS / "onboarding-checkin.yaml").spec
    result = plan_experiment(engine, spec, as_of, mde=0.1)

    rule = parse_rule(spec.segment.where)
    now = select_segment(engine, rule, as_of)
    week_ago = select_segment(engine, rule, as_of - timedelta(days=7))
    assert result.facts.segment_size == len(now) > 0
    assert result.facts.daily_inflow == pytest.approx(len(set(now) - set(week_ago)) / 7)

    # Python recount of the replayed baseline: who of the segment 15 days ago completed onboarding
    # within 14 days of that day.
    start = as_of - timedelta(days=15)
    members = select_segment(engine, rule, start)
    with Session(engine) as session:
        done = {
            e.customer_id
            for e in session.exec(
                select(ActivityEvent).where(ActivityEvent.name == "onboarding_completed")
            )
            if start <= e.occurred_at < start + timedelta(days=14) and e.occurred_at < as_of
        }
    expected = sum(c in done for c in members) / len(members)
    assert result.facts.baseline.n == len(members)
    assert result.facts.baseline.mean == pytest.approx(expected)

    assert result.plan is not None
    assert result.plan.n_per_arm == sample_size_per_arm(
        "binary", expected, None, 0.1, spec.analysis.alpha, spec.analysis.power, arms=2
    )
    assert result.plan.total == 2 * result.plan.n_per_arm
    assert result.mde_now is not None and result.mde_now > 0
    # More days of inflow make smaller effects detectable.
    values = list(result.mde_in_days.values())
    assert values == sorted(values, reverse=True)
