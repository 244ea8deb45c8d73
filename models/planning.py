"""The numbers ``retain plan`` needs from the data: how many customers the segment holds now,
how many enter it per day, and the primary metric's baseline mean and variance.

The baseline is measured by replay: the customers who matched the segment one metric window (plus
a day) ago are treated as if assigned then, and the metric is computed over their window exactly
as the evaluation would, in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, literal, select
from sqlalchemy.engine import Engine

from experiments.metrics import CATALOGUE
from experiments.rules import parse_rule
from experiments.spec import ExperimentSpec
from experiments.stats import SampleStats
from models.bulk import table
from models.customer_data import Customer
from models.metric_sql import Window, window_statistics
from models.segments import segment_query, select_segment

INFLOW_DAYS = 7


@dataclass(frozen=True)
class SegmentFacts:
    segment_size: int
    daily_inflow: float
    baseline: SampleStats
    baseline_as_of: datetime


def segment_facts(engine: Engine, spec: ExperimentSpec, as_of: datetime) -> SegmentFacts:
    """Segment size now, daily inflow over the last week, and the primary metric's baseline."""
    rule = parse_rule(spec.segment.where)
    now = set(select_segment(engine, rule, as_of))
    week_ago = set(select_segment(engine, rule, as_of - timedelta(days=INFLOW_DAYS)))
    inflow = len(now - week_ago) / INFLOW_DAYS

    metric = spec.metrics.primary
    window_days = CATALOGUE[metric].window_days
    start = as_of - timedelta(days=window_days + 1)
    members = segment_query(rule, start).subquery()
    customers = table(Customer)
    replay = (
        select(
            members.c.customer_id.label("customer_id"),
            literal(-1, Integer).label("experiment_id"),
            literal(start, customers.c.created_at.type).label("assigned_at"),
            literal("replay").label("arm"),
        )
    ).subquery("replay")
    window = Window(as_of=as_of, days=window_days, source=replay, costs=spec.analysis.costs)
    baseline = window_statistics(engine, metric, window).get("replay", SampleStats(0, 0.0, 0.0))
    return SegmentFacts(
        segment_size=len(now),
        daily_inflow=inflow,
        baseline=baseline,
        baseline_as_of=start,
    )
