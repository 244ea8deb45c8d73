"""Numbers that used to come out silently wrong (issue 11): large offsets in the CSV reader, the
log-rank df, relative lifts over a negative baseline, Welch's test on huge sums, and ``ok`` with a
missing number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.duration.survfunc import survdiff

from experiments.csvdata import MetricSpec, read_experiment_csv
from experiments.stats import SampleStats, two_proportion_ztest, welch_ttest
from experiments.stats.bayes import bayes_binary, bayes_continuous
from experiments.stats.cuped import PairedStats, cuped_adjust
from experiments.stats.fixed import omnibus_test
from experiments.stats.power import mde_for_n, plan, sample_size_per_arm
from experiments.stats.sequential import sequential_test
from experiments.stats.survival import SurvivalCounts, log_rank
from flows.analyze import analyze_csv

Y = MetricSpec("y", "continuous")


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("arm,y\n" + "".join(f"{arm},{value}\n" for arm, value in rows))
    return path


def zero_one_rows(offset: int, seed: int = 3) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [
        (arm, str(offset + int(v)))
        for arm, p in (("A", 0.5), ("B", 0.56))
        for v in rng.binomial(1, p, 400)
    ]


def test_large_offset_keeps_the_variance(tmp_path: Path) -> None:
    # Values around 1e9 that differ by 0 or 1: the one-pass sum of squares gave variance 0.0 and
    # a zero_variance report with exit 0.
    shifted = read_experiment_csv(
        write_csv(tmp_path / "a.csv", zero_one_rows(10**9)), "arm", "A", [Y]
    )
    plain = read_experiment_csv(write_csv(tmp_path / "b.csv", zero_one_rows(0)), "arm", "A", [Y])
    for arm in ("A", "B"):
        big, small = shifted.stats["y"][arm], plain.stats["y"][arm]
        assert small.variance > 0.2
        assert big.variance == pytest.approx(small.variance, rel=1e-9)
    big_test = welch_ttest(shifted.stats["y"]["B"], shifted.stats["y"]["A"])
    small_test = welch_ttest(plain.stats["y"]["B"], plain.stats["y"]["A"])
    assert big_test.status == small_test.status == "ok"
    assert big_test.p_value == pytest.approx(small_test.p_value, rel=1e-5)
    # and the p-value is scipy's on the raw 0/1 data
    a = [float(v) for arm, v in zero_one_rows(0) if arm == "A"]
    b = [float(v) for arm, v in zero_one_rows(0) if arm == "B"]
    assert small_test.p_value == pytest.approx(
        sps.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9
    )


def test_shift_by_minus_1e9_gives_the_same_p(tmp_path: Path) -> None:
    rows = [(arm, f"{float(v) + 0.25:.2f}") for arm, v in zero_one_rows(10**9, seed=5)]
    moved = [(arm, f"{float(v) - 1e9:.2f}") for arm, v in rows]
    p = [
        welch_ttest(d.stats["y"]["B"], d.stats["y"]["A"]).p_value
        for d in (
            read_experiment_csv(write_csv(tmp_path / "a.csv", rows), "arm", "A", [Y]),
            read_experiment_csv(write_csv(tmp_path / "b.csv", moved), "arm", "A", [Y]),
        )
    ]
    assert p[0] is not None and p[1] is not None
    assert p[0] == pytest.approx(p[1], rel=1e-5)
    assert p[0] > 1e-6  # the old one-pass sums gave p = 2e-41 for one of the two


def test_log_rank_example_from_the_issue() -> None:
    arms = {
        "treatment": SurvivalCounts((3, 4, 6, 7), (2, 0, 1, 1), (0, 1, 0, 0)),
        "control": SurvivalCounts((2, 4), (0, 0), (1, 1)),
    }
    result = log_rank(arms)
    assert (result.df, result.status) == (1, "ok")
    assert result.chi2 == pytest.approx(0.5, rel=1e-12)
    assert result.p_value == pytest.approx(0.4795, abs=1e-4)
    # statsmodels' survdiff on the same customers
    times = [3, 3, 4, 6, 7, 2, 4]
    status = [1, 1, 0, 1, 1, 0, 0]
    groups = [1, 1, 1, 1, 1, 0, 0]
    chi2, p = survdiff(times, status, groups)
    assert result.chi2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)


def _counts(times: np.ndarray, events: np.ndarray) -> SurvivalCounts:
    days = sorted(set(times.tolist()))
    return SurvivalCounts(
        tuple(days),
        tuple(int(np.sum((times == d) & (events == 1))) for d in days),
        tuple(int(np.sum((times == d) & (events == 0))) for d in days),
    )


def test_log_rank_df_and_p_match_statsmodels_over_simulated_experiments() -> None:
    # About 7% of small two-arm experiments used to get df = 2 and a p-value off by up to 0.3.
    rng = np.random.default_rng(11)
    for _ in range(300):
        k = int(rng.integers(2, 4))
        sizes = rng.integers(2, 9, k)
        times = [rng.integers(0, 8, s) for s in sizes]
        events = [rng.binomial(1, 0.6, s) for s in sizes]
        result = log_rank({f"arm{i}": _counts(times[i], events[i]) for i in range(k)})
        if result.status != "ok":
            continue
        assert result.df == k - 1
        chi2, p = survdiff(
            np.concatenate(times), np.concatenate(events), np.repeat(np.arange(k), sizes)
        )
        assert result.chi2 == pytest.approx(chi2, rel=1e-7, abs=1e-9)
        assert result.p_value == pytest.approx(p, rel=1e-7, abs=1e-9)


def test_negative_baseline_has_no_relative_lift() -> None:
    # baseline mean -10, treatment -5: +5 absolute; "-50%" relative had the wrong sign
    baseline = SampleStats(100, -1000.0, 100 * 100.0 + 99 * 4.0)
    treatment = SampleStats(100, -500.0, 100 * 25.0 + 99 * 4.0)
    result = welch_ttest(treatment, baseline)
    assert result.abs_lift == pytest.approx(5.0)
    assert (result.rel_lift, result.rel_ci, result.status) == (None, None, "negative_baseline")
    assert result.p_value is not None and result.p_value < 1e-10
    seq = sequential_test("continuous", treatment, baseline)
    assert (seq.rel_lift, seq.rel_ci, seq.status) == (None, None, "negative_baseline")


def test_analyze_never_reports_a_wrong_signed_relative_lift(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = [("control", f"{v:.3f}") for v in rng.normal(-10.2, 2, 300)]
    rows += [("treatment", f"{v:.3f}") for v in rng.normal(-5.2, 2, 300)]
    path = write_csv(tmp_path / "negative.csv", rows)
    _, report = analyze_csv(path, "arm", "control", [Y], tmp_path / "out")
    [comparison] = report.metrics[0].comparisons
    assert comparison.abs_lift is not None and comparison.abs_lift > 4
    assert comparison.rel_lift is None and comparison.status == "negative_baseline"
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["metrics"][0]["comparisons"][0]["rel_lift"] is None
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "-49" not in markdown and "-50" not in markdown
    assert "the baseline is negative, so the relative lift is undefined" in markdown


def test_welch_on_sums_near_1e80_does_not_raise() -> None:
    scale = 1e78
    small_t = SampleStats(10, 12.0, 12.0**2 / 10 + 9 * 3.0)
    small_b = SampleStats(12, 10.0, 10.0**2 / 12 + 11 * 2.0)
    big_t = SampleStats(10, 12.0 * scale, (12.0**2 / 10 + 9 * 3.0) * scale * scale)
    big_b = SampleStats(12, 10.0 * scale, (10.0**2 / 12 + 11 * 2.0) * scale * scale)
    small, big = welch_ttest(small_t, small_b), welch_ttest(big_t, big_b)
    assert big.status == small.status == "ok"
    for field in ("statistic", "df", "p_value", "rel_lift"):
        assert getattr(big, field) == pytest.approx(getattr(small, field), rel=1e-9)
    assert big.abs_lift == pytest.approx(small.abs_lift * scale, rel=1e-9)  # type: ignore[operator]
    reference = sps.ttest_ind_from_stats(
        1.2, math.sqrt(3.0), 10, 10 / 12, math.sqrt(2.0), 12, equal_var=False
    )
    assert small.p_value == pytest.approx(reference.pvalue, rel=1e-9)


def test_sums_at_the_float64_limit_never_raise() -> None:
    cases = [
        (SampleStats(2, 1.7e308, 1.7e308, 8.5e307), SampleStats(2, -1.7e308, 1.7e308, -8.5e307)),
        (SampleStats(2, 1.7e308, 1.7e308), SampleStats(2, -1.7e308, 1.7e308)),
        (SampleStats(3, 1e-300, 1e-310), SampleStats(3, 0.0, 1e-320)),
    ]
    for treatment, baseline in cases:
        result = welch_ttest(treatment, baseline)
        numbers = (result.abs_lift, result.abs_ci, result.p_value, result.statistic, result.df)
        if result.status in ("ok", "negative_baseline", "rel_ci_undefined"):
            assert None not in numbers
            assert all(math.isfinite(x) for x in (result.abs_lift, result.p_value, result.df))


@pytest.mark.parametrize(
    ("treatment", "baseline", "status"),
    [
        ((50, 0), (50, 10), "rel_ci_undefined"),  # no conversions in the treatment arm
        ((50, 10), (50, 0), "zero_baseline"),  # no conversions in the control arm
        ((50, 10), (50, 12), "ok"),
    ],
)
def test_zero_conversions_never_report_ok_with_a_missing_number(
    treatment: tuple[int, int], baseline: tuple[int, int], status: str
) -> None:
    t = SampleStats(treatment[0], float(treatment[1]), float(treatment[1]))
    b = SampleStats(baseline[0], float(baseline[1]), float(baseline[1]))
    for result in (two_proportion_ztest(t, b), sequential_test("binary", t, b)):
        assert result.status == status
        numbers = (result.abs_lift, result.abs_ci, result.rel_lift, result.rel_ci, result.p_value)
        assert (None not in numbers) == (status == "ok")


def test_fuzz_findings_bayes_and_cuped_stay_quiet_and_honest() -> None:
    # Found by tests/test_fuzz.py: a QUADPACK warning on tiny all-zero arms, a numpy overflow
    # warning in the normal density far out, and math.fsum overflowing in CUPED.
    tiny = bayes_binary(SampleStats(1, 0.0, 0.0), SampleStats(4, 0.0, 0.0), alpha=0.01)
    assert tiny.chance_to_beat is not None and 0.5 < tiny.chance_to_beat < 1
    far = bayes_continuous(SampleStats(2, 1.9e154, 0.0), SampleStats(2, 0.0, 1.0))
    assert far.status == "ok" and far.chance_to_beat == 1.0 and far.risk == 0.0
    huge = PairedStats(2, 1e308, 1e308, 1.0, 1.0, 1.0)
    result = cuped_adjust({"a": huge, "b": huge})
    assert result.status == "out_of_range" and result.theta is None
    assert result.adjusted["a"] == huge.outcome


def test_fuzz_findings_omnibus_and_power_at_the_limits() -> None:
    # Found by tests/test_fuzz.py: Welch's ANOVA squared a 1e200 difference with ** (OverflowError),
    # and a vanishing mde divided by zero when planning.
    far = {
        "a": SampleStats(3, 3e200, 2.0, 1e200),
        "b": SampleStats(3, -3e200, 2.0, -1e200),
        "c": SampleStats(3, 0.0, 2.0),
    }
    assert omnibus_test("continuous", far).status == "out_of_range"
    with pytest.raises(ValueError, match="needs more than 1,000,000,000,000,000 units per arm"):
        sample_size_per_arm("continuous", 10.0, 4.0, 1e-200)
    with pytest.raises(ValueError, match="too large to plan with"):
        mde_for_n("continuous", 0.0, 1.1451909034833745e307, 2)


def test_planning_with_extreme_weights_and_inflow_is_a_value_error_or_a_plan() -> None:
    with pytest.raises(ValueError, match="differ too much to plan with"):
        plan("continuous", 1.0, 4.0, 0.5, 0.05, 0.8, [1e-300, 1e10], 10.0)
    same = plan("continuous", 1.0, 4.0, 0.5, 0.05, 0.8, [1e308, 1e308], 10.0)
    assert same == plan("continuous", 1.0, 4.0, 0.5, 0.05, 0.8, [1, 1], 10.0)
    assert plan("continuous", 1.0, 4.0, 0.5, 0.05, 0.8, [1, 1], 1e308).mde_in_days == {}
