"""The primary metric's per-arm sufficient statistics as they stood on each day since the first
assignment, for the report's lift-over-time chart, from the stored daily aggregates.

The evaluation stores, per arm and assignment day, the sums of every cohort whose windows have all
ended (:mod:`models.daily_aggregates`); :func:`models.daily_aggregates.cumulative_series` adds them
up day by day. The cohort assigned on UTC day ``D`` is final, and so counted in full, from the start
of day ``D + 1 + w`` on (``w``: the metric's window in days). So the point for cohort ``D`` is the
report as it could be read ``(D - S) + 1 + w`` days after the first assignment's day ``S``. No
customer row is read: the chart costs one read of the stored sums, whatever the experiment's size.

Only cohorts final by ``as_of`` are used (a report regenerated for an earlier cut-off does not see
later stored days); the report's own numbers, which also count the customers of the latest,
not yet final day, are its last point (:mod:`experiments.report.timeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from experiments.metrics import CATALOGUE
from experiments.stats import SampleStats
from models.daily_aggregates import cumulative_series, final_before
from models.metric_sql import ASSIGNMENTS


@dataclass(frozen=True)
class StoredSeries:
    """When the experiment started, and per day since (the day a cohort became final) the
    cumulative statistics per arm (every arm in the stored days, the holdout included)."""

    started_at: datetime | None
    points: list[tuple[int, dict[str, SampleStats]]]


def first_assignment(engine: Engine, experiment_id: int) -> datetime | None:
    """The experiment's first ``assigned_at`` (UTC)."""
    a = ASSIGNMENTS
    query = select(func.min(a.c.assigned_at)).where(a.c.experiment_id == experiment_id)
    with engine.connect() as connection:
        found = connection.execute(query).scalar_one_or_none()
    if found is None:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def readable_day(cohort: date, start: date, window_days: int) -> int:
    """Days after the first assignment's day on which cohort ``cohort`` is counted in full."""
    return (cohort - start).days + 1 + window_days


def stored_series(engine: Engine, experiment_id: int, metric: str, as_of: datetime) -> StoredSeries:
    """The stored cumulative series of ``metric`` up to the cohorts final at ``as_of``, by day
    since the first assignment. Empty before the first evaluation has stored a final day."""
    started = first_assignment(engine, experiment_id)
    if started is None:
        return StoredSeries(None, [])
    window = CATALOGUE[metric].window_days
    final = final_before(as_of, window)
    start = started.astimezone(UTC).date()
    points = [
        (readable_day(c.day, start, window), dict(c.arms))
        for c in cumulative_series(engine, experiment_id, metric)
        if c.day < final
    ]
    return StoredSeries(started, points)
