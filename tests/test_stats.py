"""The v1 statistics engine against independent references: statsmodels, scipy, closed forms and
seeded simulations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import astuple

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import (
    ComparisonResult,
    SampleStats,
    compare,
    srm_test,
    two_proportion_ztest,
    welch_ttest,
)


def binary(successes: int, n: int) -> SampleStats:
    return SampleStats(n, successes, successes)


def from_array(x: np.ndarray) -> SampleStats:
    return SampleStats(len(x), float(x.sum()), float((x**2).sum()))


def assert_no_nan(result: ComparisonResult) -> None:
    for value in astuple(result):
        for v in value if isinstance(value, tuple) else (value,):
            assert not (isinstance(v, float) and not math.isfinite(v)), result


# --- SampleStats ---------------------------------------------------------------------------------


def test_sample_stats_mean_and_variance_match_numpy() -> None:
    x = np.random.default_rng(1).lognormal(3.0, 1.0, size=500)
    s = from_array(x)
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.variance == pytest.approx(x.var(ddof=1), rel=1e-9)


def test_sample_stats_small_n_has_zero_variance_and_empty_mean_zero() -> None:
    assert SampleStats(1, 5.0, 25.0).variance == 0.0
    assert SampleStats(0, 0, 0).mean == 0.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0.0, 0.0), "n must be a whole number >= 0"),
        ((3, 1.0, -2.0), "sum_squares must be >= 0"),
        ((3, float("nan"), 1.0), "sum must be a finite number"),
        ((3, 1.0, float("inf")), "sum_squares must be a finite number"),
        ((0, 1.0, 1.0), "n=0 must have sum=0"),
    ],
)
def test_sample_stats_rejects_bad_input(args: tuple[int, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SampleStats(*args)


# --- two-proportion z-test -----------------------------------------------------------------------


def test_ztest_published_example() -> None:
    # statsmodels docs/tests example: proportions_ztest(count=[5, 12], nobs=[83, 99]),
    # two-sided p-value 0.159181 (z -1.4078).
    result = two_proportion_ztest(binary(5, 83), binary(12, 99))
    assert result.p_value == pytest.approx(0.159181, abs=1e-6)
    assert result.statistic == pytest.approx(-1.4078, abs=1e-4)
    assert result.status == "ok" and result.method == "two_proportion_z" and result.df is None


@pytest.mark.parametrize(
    ("x_t", "n_t", "x_b", "n_b"),
    [(5, 83, 12, 99), (130, 1010, 100, 1000), (4_210, 20_000, 4_000, 20_100), (0, 50, 3, 60)],
)
def test_ztest_pvalue_equals_statsmodels_pooled(x_t: int, n_t: int, x_b: int, n_b: int) -> None:
    z, p = proportions_ztest([x_t, x_b], [n_t, n_b])  # pooled variance by default
    result = two_proportion_ztest(binary(x_t, n_t), binary(x_b, n_b))
    assert result.statistic == pytest.approx(float(z), rel=1e-10)
    assert result.p_value == pytest.approx(float(p), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.05, 0.10, 0.01])
@pytest.mark.parametrize(("x_t", "n_t", "x_b", "n_b"), [(5, 83, 12, 99), (130, 1010, 100, 1000)])
def test_ztest_ci_is_unpooled_wald(x_t: int, n_t: int, x_b: int, n_b: int, alpha: float) -> None:
    lo, hi = confint_proportions_2indep(
        x_t, n_t, x_b, n_b, method="wald", compare="diff", alpha=alpha
    )
    result = two_proportion_ztest(binary(x_t, n_t), binary(x_b, n_b), alpha)
    assert result.abs_ci == pytest.approx((float(lo), float(hi)), rel=1e-10)
    # the same interval in closed form
    p_t, p_b = x_t / n_t, x_b / n_b
    half = sps.norm.ppf(1 - alpha / 2) * math.sqrt(p_t * (1 - p_t) / n_t + p_b * (1 - p_b) / n_b)
    assert result.abs_ci == pytest.approx((p_t - p_b - half, p_t - p_b + half), rel=1e-12)
    assert result.abs_lift == pytest.approx(p_t - p_b, rel=1e-12)


def test_ztest_rejects_more_successes_than_units() -> None:
    with pytest.raises(
        ValueError, match=r"binary metric, treatment arm: sum .* between 0 and n=10"
    ):
        two_proportion_ztest(SampleStats(10, 11, 11), binary(1, 10))


# --- Welch t-test --------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.10])
@pytest.mark.parametrize(("seed", "n_t", "n_b"), [(0, 40, 25), (1, 500, 800), (2, 3, 2)])
def test_welch_equals_scipy_and_statsmodels(seed: int, n_t: int, n_b: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    x_t = rng.lognormal(3.1, 1.2, size=n_t)
    x_b = rng.lognormal(3.0, 0.8, size=n_b)
    reference = sps.ttest_ind(x_t, x_b, equal_var=False)
    lo, hi = CompareMeans(DescrStatsW(x_t), DescrStatsW(x_b)).tconfint_diff(
        alpha=alpha, usevar="unequal"
    )
    result = welch_ttest(from_array(x_t), from_array(x_b), alpha)
    assert result.status == "ok" and result.method == "welch_t"
    assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-8)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-8)
    assert result.df == pytest.approx(float(reference.df), rel=1e-8)
    assert result.abs_lift == pytest.approx(x_t.mean() - x_b.mean(), rel=1e-9)
    assert result.abs_ci == pytest.approx((float(lo), float(hi)), rel=1e-8)


def test_compare_dispatches_on_kind() -> None:
    t, b = binary(30, 100), binary(20, 100)
    assert compare("binary", t, b) == two_proportion_ztest(t, b)
    assert compare("continuous", t, b) == welch_ttest(t, b)
    with pytest.raises(ValueError, match="unknown metric kind 'ratio'"):
        compare("ratio", t, b)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_must_be_a_probability(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        welch_ttest(binary(3, 10), binary(4, 10), alpha)


# --- delta-method relative CI --------------------------------------------------------------------


def _delta_by_numeric_gradient(
    m_t: float, se2_t: float, m_b: float, se2_b: float
) -> tuple[float, float]:
    """Relative lift and its variance via a finite-difference gradient of m_t / m_b - 1: an
    implementation of the delta method that shares no code with the engine's closed form."""

    def f(a: float, b: float) -> float:
        return a / b - 1

    h_t, h_b = 1e-6 * abs(m_t) or 1e-9, 1e-6 * abs(m_b)
    grad = np.array(
        [
            (f(m_t + h_t, m_b) - f(m_t - h_t, m_b)) / (2 * h_t),
            (f(m_t, m_b + h_b) - f(m_t, m_b - h_b)) / (2 * h_b),
        ]
    )
    return f(m_t, m_b), float(grad @ np.diag([se2_t, se2_b]) @ grad)


def test_relative_ci_binary_is_the_delta_method() -> None:
    t, b = binary(130, 1010), binary(100, 1000)
    p_t, p_b = 130 / 1010, 100 / 1000
    # closed form: Var(r) = v_t / (n_t m_b^2) + m_t^2 v_b / (n_b m_b^4), v = p (1 - p)
    var = p_t * (1 - p_t) / (1010 * p_b**2) + p_t**2 * p_b * (1 - p_b) / (1000 * p_b**4)
    rel, var_numeric = _delta_by_numeric_gradient(
        p_t, p_t * (1 - p_t) / 1010, p_b, p_b * (1 - p_b) / 1000
    )
    assert var_numeric == pytest.approx(var, rel=1e-6)
    half = sps.norm.ppf(0.975) * math.sqrt(var_numeric)
    result = two_proportion_ztest(t, b)
    assert result.rel_lift == pytest.approx(0.287128713, rel=1e-8)  # 130/1010 / 0.1 - 1
    assert result.rel_ci == pytest.approx((rel - half, rel + half), rel=1e-6)


def test_relative_ci_continuous_is_the_delta_method_with_welch_quantile() -> None:
    rng = np.random.default_rng(7)
    x_t, x_b = rng.exponential(55.0, 300), rng.exponential(50.0, 250)
    result = welch_ttest(from_array(x_t), from_array(x_b))
    rel, var = _delta_by_numeric_gradient(
        x_t.mean(), x_t.var(ddof=1) / 300, x_b.mean(), x_b.var(ddof=1) / 250
    )
    assert result.df is not None
    half = sps.t.ppf(0.975, result.df) * math.sqrt(var)
    assert result.rel_lift == pytest.approx(rel, rel=1e-9)
    assert result.rel_ci == pytest.approx((rel - half, rel + half), rel=1e-6)


def _coverage(results: list[ComparisonResult], attr: str, truth: float) -> float:
    intervals = [getattr(r, attr) for r in results]
    assert all(ci is not None for ci in intervals)
    return float(np.mean([lo <= truth <= hi for lo, hi in intervals]))


def test_relative_ci_covers_true_relative_lift_binary() -> None:
    rng = np.random.default_rng(20240601)
    sims, n, p_b, p_t = 2_000, 4_000, 0.10, 0.12
    x_t, x_b = rng.binomial(n, p_t, sims), rng.binomial(n, p_b, sims)
    results = [
        two_proportion_ztest(binary(int(a), n), binary(int(b), n))
        for a, b in zip(x_t, x_b, strict=True)
    ]
    assert abs(_coverage(results, "rel_ci", p_t / p_b - 1) - 0.95) <= 0.015


def test_relative_ci_covers_true_relative_lift_continuous() -> None:
    rng = np.random.default_rng(20240602)
    sims, n_t, n_b, mean_t, mean_b = 2_000, 600, 500, 55.0, 50.0
    x_t = rng.exponential(mean_t, (sims, n_t))
    x_b = rng.exponential(mean_b, (sims, n_b))
    results = [welch_ttest(from_array(a), from_array(b)) for a, b in zip(x_t, x_b, strict=True)]
    assert abs(_coverage(results, "rel_ci", mean_t / mean_b - 1) - 0.95) <= 0.015


# --- A/A simulation ------------------------------------------------------------------------------


@pytest.mark.slow
def test_aa_ztest_false_positive_rate_and_ci_coverage() -> None:
    rng = np.random.default_rng(12345)
    sims, n, p = 4_000, 2_000, 0.2
    x_t, x_b = rng.binomial(n, p, sims), rng.binomial(n, p, sims)
    results = [
        two_proportion_ztest(binary(int(a), n), binary(int(b), n))
        for a, b in zip(x_t, x_b, strict=True)
    ]
    p_values = np.array([r.p_value for r in results])
    false_positive_rate = float(np.mean(p_values < 0.05))
    assert 0.04 <= false_positive_rate <= 0.06
    assert abs(_coverage(results, "abs_ci", 0.0) - 0.95) <= 0.015


@pytest.mark.slow
def test_aa_welch_false_positive_rate_and_ci_coverage() -> None:
    rng = np.random.default_rng(54321)
    sims, n = 2_000, 400
    x_t, x_b = rng.lognormal(3.0, 1.0, (sims, n)), rng.lognormal(3.0, 1.0, (sims, n))
    results = [welch_ttest(from_array(a), from_array(b)) for a, b in zip(x_t, x_b, strict=True)]
    false_positive_rate = float(
        np.mean([r.p_value is not None and r.p_value < 0.05 for r in results])
    )
    assert 0.035 <= false_positive_rate <= 0.065
    assert abs(_coverage(results, "abs_ci", 0.0) - 0.95) <= 0.015


# --- degenerate cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("test", [two_proportion_ztest, welch_ttest])
@pytest.mark.parametrize(("t", "b"), [(binary(1, 1), binary(3, 10)), (binary(3, 10), binary(0, 0))])
def test_n_too_small_returns_no_numbers(
    test: Callable[[SampleStats, SampleStats], ComparisonResult], t: SampleStats, b: SampleStats
) -> None:
    result = test(t, b)
    assert result.status == "n_too_small"
    assert (result.abs_lift, result.abs_ci, result.rel_lift, result.rel_ci) == (None,) * 4
    assert (result.p_value, result.statistic, result.df) == (None, None, None)


@pytest.mark.parametrize(
    ("t", "b", "abs_lift", "rel_lift"),
    [
        (binary(0, 500), binary(0, 480), 0.0, None),  # nobody converted anywhere
        (binary(500, 500), binary(480, 480), 0.0, 0.0),  # everybody converted
        (binary(40, 40), binary(0, 30), 1.0, None),  # all versus nothing
    ],
)
def test_zero_variance_binary(
    t: SampleStats, b: SampleStats, abs_lift: float, rel_lift: float | None
) -> None:
    result = two_proportion_ztest(t, b)
    assert result.status == "zero_variance"
    assert result.abs_lift == abs_lift and result.rel_lift == rel_lift
    assert (result.abs_ci, result.rel_ci, result.p_value, result.statistic) == (None,) * 4
    assert_no_nan(result)


def test_zero_variance_continuous() -> None:
    result = welch_ttest(SampleStats(10, 50.0, 250.0), SampleStats(8, 32.0, 128.0))  # 5s vs 4s
    assert result.status == "zero_variance"
    assert result.abs_lift == pytest.approx(1.0) and result.rel_lift == pytest.approx(0.25)
    assert (result.abs_ci, result.rel_ci, result.p_value, result.df) == (None,) * 4


def test_zero_baseline_binary_keeps_the_absolute_part() -> None:
    result = two_proportion_ztest(binary(3, 990), binary(0, 1000))
    _, p = proportions_ztest([3, 0], [990, 1000])
    assert result.status == "zero_baseline"
    assert result.rel_lift is None and result.rel_ci is None
    assert result.abs_lift == pytest.approx(3 / 990)
    assert result.p_value == pytest.approx(float(p), rel=1e-10)
    assert result.abs_ci is not None and result.abs_ci[0] < 3 / 990 < result.abs_ci[1]
    assert_no_nan(result)


def test_zero_baseline_continuous_keeps_the_absolute_part() -> None:
    x_t, x_b = np.array([1.0, 2.0, 4.0, 3.0]), np.array([-1.0, 1.0, -2.0, 2.0])
    result = welch_ttest(from_array(x_t), from_array(x_b))
    assert result.status == "zero_baseline"
    assert result.rel_lift is None and result.rel_ci is None
    assert result.p_value == pytest.approx(float(sps.ttest_ind(x_t, x_b, equal_var=False).pvalue))
    assert_no_nan(result)


def test_huge_samples_stay_finite() -> None:
    n = 10**12
    result = two_proportion_ztest(binary(n // 2 + 10**7, n), binary(n // 2, n))
    assert result.status == "ok" and result.p_value is not None and result.p_value < 1e-10
    assert_no_nan(result)


# --- sample ratio mismatch -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "weights"),
    [([5_050, 4_950], [1, 1]), ([2_010, 1_020, 970], [2, 1, 1]), ([300, 720], [0.3, 0.7])],
)
def test_srm_equals_scipy_chisquare(counts: list[int], weights: list[float]) -> None:
    total = sum(counts)
    expected = [total * w / sum(weights) for w in weights]
    reference = sps.chisquare(counts, expected)
    result = srm_test(counts, weights)
    assert result.chi2 == pytest.approx(float(reference.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-12)
    assert result.df == len(counts) - 1
    assert result.expected == pytest.approx(tuple(expected))


def test_srm_flags_a_clear_mismatch_and_passes_a_clean_split() -> None:
    assert not srm_test([5_300, 4_700], [1, 1]).ok  # p ~ 1.9e-9
    assert srm_test([5_010, 4_990], [1, 1]).ok  # p ~ 0.84
    empty = srm_test([0, 0], [1, 1])
    assert empty.ok and empty.p_value == 1.0 and empty.chi2 == 0.0


@pytest.mark.parametrize(
    ("counts", "weights", "message"),
    [
        ([10, 10], [1], "2 counts but 1 weights"),
        ([10], [1], "at least 2 arms"),
        ([10, -1], [1, 1], "count #1 must be a whole number >= 0"),
        ([10, 10], [1, 0], "weight #1 must be a finite number > 0"),
    ],
)
def test_srm_rejects_bad_input(counts: list[int], weights: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        srm_test(counts, weights)
