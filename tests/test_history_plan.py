"""A year of synthetic history is deep enough to plan the shipped examples: `retain plan` finds a
non-zero baseline, a sample size per arm and a duration (SQLite, and PostgreSQL via the fixture).

The replay reads the segment as it was one metric window ago: an invoice recovered since was
unpaid then and its subscription past due (models/features.py rewinds both), so the dunning
baseline counts the customers who paid on their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from experiments.loader import load_spec
from experiments.simulation.business import BusinessConfig
from flows.plan import plan_experiment
from models.seed import seed_business

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"


@pytest.mark.slow
def test_every_shipped_example_has_a_baseline_sample_size_and_duration(engine: Engine) -> None:
    config = BusinessConfig(customers=5_000, seed=5)
    seed_business(engine, config)
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        spec = load_spec(path).spec
        result = plan_experiment(engine, spec, config.as_of)
        base = result.facts.baseline
        assert base.n >= 100, path.name
        assert base.mean > 0, path.name  # the replayed window holds responses
        if result.kind == "binary":  # not everyone responds on their own either
            assert base.mean < 0.9, path.name
        assert result.facts.segment_size > 0 and result.facts.daily_inflow > 0, path.name
        assert result.plan is not None and result.plan.n_per_arm >= 2, path.name
        assert result.days_after_current is not None, path.name
