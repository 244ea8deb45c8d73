"""build_report with every method on: degenerate-but-valid data gives explicit statuses, and the
headline follows the settings."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from experiments.analysis import AnalysisSettings, MetricInput, SurvivalInput, build_report
from experiments.stats import SampleStats
from experiments.stats.cuped import PairedStats
from experiments.stats.survival import SurvivalCounts

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def report_for(metrics: list[MetricInput], settings: AnalysisSettings, **kw: object):  # type: ignore[no-untyped-def]
    return build_report(
        experiment="x",
        hypothesis="h",
        computed_at=NOW,
        as_of=NOW,
        alpha=0.05,
        baseline="control",
        arm_weights={"control": 1.0, "a": 1.0, "b": 1.0},
        metrics=metrics,
        settings=settings,
        **kw,  # type: ignore[arg-type]
    )


def numbers(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers(v)]
    if isinstance(value, list | tuple):
        return [x for v in value for x in numbers(v)]
    return []


def test_zero_conversions_everywhere_and_an_empty_arm_give_statuses_not_crashes() -> None:
    zero = SampleStats(n=500, sum=0.0, sum_squares=0.0)
    empty = SampleStats(n=0, sum=0.0, sum_squares=0.0)
    metrics = [
        MetricInput("converted", "binary", "primary", "d", {"control": zero, "a": zero, "b": zero}),
        MetricInput(
            "revenue", "continuous", "secondary", "d", {"control": zero, "a": zero, "b": empty}
        ),
    ]
    empty_survival = SurvivalCounts((), (), ())
    report = report_for(
        metrics,
        AnalysisSettings(method="sequential", cuped=True),
        survival=SurvivalInput({"control": empty_survival, "a": empty_survival}, 90),
        balance={"tenure": {"control": zero, "a": zero, "b": empty}},
    )
    converted, revenue = report.metrics
    assert {c.status for c in converted.comparisons} == {"zero_variance"}
    assert all(c.significant is False and c.p_value_adjusted is None for c in converted.comparisons)
    assert revenue.comparisons[1].status == "n_too_small"
    assert revenue.omnibus is None  # an arm is empty: no omnibus yet
    assert report.balance is None and report.survival is None
    assert all(math.isfinite(x) for x in numbers(report.model_dump()))


def test_headline_follows_the_method_and_correction() -> None:
    control = SampleStats(n=4_000, sum=800.0, sum_squares=800.0)
    a = SampleStats(n=4_000, sum=880.0, sum_squares=880.0)
    b = SampleStats(n=4_000, sum=810.0, sum_squares=810.0)
    metric = MetricInput(
        "converted", "binary", "primary", "d", {"control": control, "a": a, "b": b}
    )
    fixed = report_for([metric], AnalysisSettings(method="fixed", correction="none"))
    sequential = report_for([metric], AnalysisSettings(method="sequential", correction="holm"))
    for f, s in zip(fixed.metrics[0].comparisons, sequential.metrics[0].comparisons, strict=True):
        assert f.p_value == s.p_value  # the fixed-horizon p-value is reported either way
        assert f.p_value_adjusted == f.p_value  # no correction
        assert s.sequential is not None and s.sequential.p_value is not None
        assert s.p_value_adjusted is not None and s.p_value_adjusted >= s.sequential.p_value
        assert s.headline == "sequential" and f.headline == "fixed"
        # the always-valid interval is wider than the fixed one
        assert s.sequential.abs_ci is not None and f.abs_ci is not None
        assert s.sequential.abs_ci[0] < f.abs_ci[0] and s.sequential.abs_ci[1] > f.abs_ci[1]
    # Holm over 2 comparisons: the smaller p doubles.
    ps = sorted(c.sequential.p_value for c in sequential.metrics[0].comparisons)  # type: ignore[union-attr]
    adjusted = sorted(c.p_value_adjusted for c in sequential.metrics[0].comparisons)  # type: ignore[type-var]
    assert adjusted[0] == pytest.approx(min(1.0, 2 * ps[0]))


def test_cuped_is_applied_when_it_reduces_variance() -> None:
    def paired(n: int, shift: float) -> PairedStats:
        # x and y strongly correlated: y = x + shift + noise (sums of a made-up sample)
        return PairedStats(n=n, sum_x=10.0 * n, sum_x2=110.0 * n, sum_y=(10.0 + shift) * n,
                           sum_y2=((10.0 + shift) ** 2 + 11.0) * n, sum_xy=(10.0 * (10.0 + shift) + 9.5) * n)  # fmt: skip

    arms = {"control": paired(1_000, 0.0), "a": paired(1_000, 0.3), "b": paired(1_000, 0.1)}
    metric = MetricInput("revenue", "continuous", "primary", "d",
                         {k: v.outcome for k, v in arms.items()}, paired=arms)  # fmt: skip
    with_cuped = report_for([metric], AnalysisSettings(cuped=True))
    without = report_for([metric], AnalysisSettings(cuped=False))
    c, u = with_cuped.metrics[0].comparisons[0], without.metrics[0].comparisons[0]
    assert c.cuped is not None and c.cuped.applied and c.method == "cuped_welch_t"
    assert c.cuped.variance_reduction is not None and c.cuped.variance_reduction > 0.5
    assert c.abs_ci is not None and u.abs_ci is not None
    assert (c.abs_ci[1] - c.abs_ci[0]) < (u.abs_ci[1] - u.abs_ci[0])
    assert c.cuped.unadjusted_abs_ci == u.abs_ci
