"""``retain plan``: how many customers and how many days an experiment needs, from the data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from experiments.metrics import CATALOGUE
from experiments.spec import ExperimentSpec
from experiments.stats.power import PLAN_HORIZONS_DAYS, Plan, mde_for_n, plan
from models.planning import SegmentFacts, segment_facts


@dataclass(frozen=True)
class ExperimentPlan:
    metric: str
    kind: str
    facts: SegmentFacts
    mde: float | None
    plan: Plan | None
    days_after_current: float | None  # days of inflow still needed once today's segment is in
    mde_now: float | None  # MDE reachable with today's segment alone
    mde_in_days: dict[int, float]


def plan_experiment(
    engine: Engine, spec: ExperimentSpec, as_of: datetime, mde: float | None = None
) -> ExperimentPlan:
    """Sample size per arm for the primary metric at the spec's (or the given) MDE, alpha and
    power; the expected duration at the segment's daily inflow; the MDE reachable in 14, 28 and
    56 days and with today's segment alone. Fixed-horizon formulas (a sequential analysis needs
    somewhat more)."""
    metric = spec.metrics.primary
    kind = CATALOGUE[metric].kind
    facts = segment_facts(engine, spec, as_of)
    base = facts.baseline
    if base.n < 2:
        raise ValueError(
            f"the segment of {spec.key!r} held {base.n} customers on "
            f"{facts.baseline_as_of:%Y-%m-%d}: too few to measure the baseline of {metric}"
        )
    mde = mde if mde is not None else spec.analysis.mde
    weights = [arm.weight for arm in spec.arms]
    share = min(weights) / math.fsum(weights)
    alpha, power = spec.analysis.alpha, spec.analysis.power
    inflow = facts.daily_inflow if facts.daily_inflow > 0 else None

    def reachable(n_per_arm: int) -> float | None:
        try:
            return mde_for_n(kind, base.mean, base.variance, n_per_arm, alpha, power, len(weights))
        except ValueError:
            return None

    result = None
    days_after_current = None
    if mde is not None:
        result = plan(kind, base.mean, base.variance, mde, alpha, power, weights, inflow)
        remaining = max(result.total - facts.segment_size, 0)
        days_after_current = remaining / inflow if inflow else (0.0 if remaining == 0 else None)
    in_days = {}
    for days in PLAN_HORIZONS_DAYS:
        n = math.floor((facts.segment_size + (inflow or 0) * days) * share)
        value = reachable(n)
        if value is not None:
            in_days[days] = value
    return ExperimentPlan(
        metric=metric,
        kind=kind,
        facts=facts,
        mde=mde,
        plan=result,
        days_after_current=days_after_current,
        mde_now=reachable(math.floor(facts.segment_size * share)),
        mde_in_days=in_days,
    )
