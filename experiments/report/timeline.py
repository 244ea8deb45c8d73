"""The primary metric's lift over time: the always-valid CI as it read on each day since the first
assignment, from per-day sufficient statistics (cumulated here), narrowing as customers are counted.

The confidence sequence (:mod:`experiments.stats.sequential`) holds at every look at once, so the whole
path can be read, not just its last point. The daily points use the plain metric (no CUPED), so
the last point can be a little wider than the headline's interval when CUPED applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from experiments.metrics import MetricKind
from experiments.report.models import LiftOverTime, LiftPoint, LiftSeriesArm
from experiments.stats import SampleStats
from experiments.stats.sequential import METHOD, SequentialSettings, sequential_test


def cumulative(daily: Mapping[int, SampleStats], days: list[int]) -> list[SampleStats]:
    """Running totals of ``daily`` at each of ``days`` (sorted)."""
    total, out = SampleStats(0, 0.0, 0.0), []
    ordered = sorted(daily)
    i = 0
    for day in days:
        while i < len(ordered) and ordered[i] <= day:
            total = total.plus(daily[ordered[i]])
            i += 1
        out.append(total)
    return out


def lift_over_time(
    metric: str,
    kind: MetricKind,
    baseline: str,
    arms: list[str],
    daily: Mapping[str, Mapping[int, SampleStats]],
    started_at: datetime | None,
    settings: SequentialSettings,
) -> LiftOverTime:
    """One point per day on which some customer became countable, per non-baseline arm."""
    days = sorted({d for per_day in daily.values() for d in per_day})
    base = cumulative(daily.get(baseline, {}), days)
    series = []
    for arm in arms:
        if arm == baseline:
            continue
        treated = cumulative(daily.get(arm, {}), days)
        points = []
        for day, t, b in zip(days, treated, base, strict=True):
            result = sequential_test(kind, t, b, settings)
            points.append(
                LiftPoint(
                    day=day, n=t.n, n_baseline=b.n, abs_lift=result.abs_lift, ci=result.abs_ci
                )
            )
        series.append(LiftSeriesArm(arm=arm, points=points))
    return LiftOverTime(
        metric=metric,
        kind=kind,
        method=METHOD,
        started_at=None if started_at is None else started_at.isoformat(),
        arms=series,
    )
