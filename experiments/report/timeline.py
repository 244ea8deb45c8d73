"""The primary metric's lift over time: the always-valid CI as it read on each day since the first
assignment, from cumulative per-arm sufficient statistics (the stored daily aggregates, see
:mod:`models.lift_series`), narrowing as customers are counted.

The confidence sequence (:mod:`experiments.stats.sequential`) holds at every look at once, so the whole
path can be read, not just its last point. The daily points use the plain metric (no CUPED), so
the last point can be a little wider than the headline's interval when CUPED applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from experiments.metrics import MetricKind
from experiments.report.models import ArmMetricStats, LiftOverTime, LiftPoint, LiftSeriesArm
from experiments.stats import SampleStats
from experiments.stats.sequential import METHOD, SequentialSettings, sequential_test

EMPTY = SampleStats(0, 0.0, 0.0)
CumulativePoint = tuple[int, Mapping[str, SampleStats]]


def sample_of(arm: ArmMetricStats) -> SampleStats:
    """A report arm's statistics back as sufficient statistics (squares around its mean)."""
    if arm.n == 0:
        return EMPTY
    squares = max(arm.variance * (arm.n - 1), 0.0)
    return SampleStats(arm.n, arm.sum, squares, shift=arm.mean)


def with_latest(
    points: Sequence[CumulativePoint], day: int, latest: Mapping[str, SampleStats]
) -> list[CumulativePoint]:
    """``points`` followed by the report's own numbers on ``day`` (they also count the customers
    of the latest, not yet final, cohort) when they count more customers than the last point."""
    out = [p for p in points if p[0] < day]
    counted = sum(s.n for s in latest.values())
    if counted > (sum(s.n for s in out[-1][1].values()) if out else 0):
        out.append((day, latest))
    elif len(out) < len(points):
        out.append(points[len(out)])
    return out


def lift_over_time(
    metric: str,
    kind: MetricKind,
    baseline: str,
    arms: list[str],
    points: Sequence[CumulativePoint],
    started_at: datetime | None,
    settings: SequentialSettings,
) -> LiftOverTime:
    """One point per day of ``points`` (day since the first assignment, cumulative statistics
    per arm), per non-baseline arm."""
    series = []
    for arm in arms:
        if arm == baseline:
            continue
        out = []
        for day, stats in points:
            t, b = stats.get(arm, EMPTY), stats.get(baseline, EMPTY)
            result = sequential_test(kind, t, b, settings)
            out.append(
                LiftPoint(
                    day=day, n=t.n, n_baseline=b.n, abs_lift=result.abs_lift, ci=result.abs_ci
                )
            )
        series.append(LiftSeriesArm(arm=arm, points=out))
    return LiftOverTime(
        metric=metric,
        kind=kind,
        method=METHOD,
        started_at=None if started_at is None else started_at.isoformat(),
        arms=series,
    )
