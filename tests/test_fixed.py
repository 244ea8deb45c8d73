"""Fisher's exact test and the omnibus tests against scipy, statsmodels, published examples and
closed forms."""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.oneway import anova_oneway

from experiments.stats import SampleStats, two_proportion_ztest, welch_ttest
from experiments.stats.fixed import (
    FisherResult,
    OmnibusResult,
    fisher_exact_test,
    needs_exact,
    omnibus_test,
)


def binary(successes: int, n: int) -> SampleStats:
    return SampleStats(n, successes, successes)


def from_array(x: np.ndarray) -> SampleStats:
    return SampleStats(len(x), float(x.sum()), float((x**2).sum()))


def assert_no_nan(result: FisherResult | OmnibusResult) -> None:
    for value in astuple(result):
        assert not (isinstance(value, float) and not math.isfinite(value)), result


# --- Fisher's exact test -------------------------------------------------------------------------


def test_fisher_lady_tasting_tea() -> None:
    # Fisher (1935), The Design of Experiments: the lady tasting tea, table [[3, 1], [1, 3]];
    # two-sided p = 34/70 = 0.4857, sample odds ratio 3*3 / (1*1) = 9.
    result = fisher_exact_test(binary(3, 4), binary(1, 4))
    assert result.p_value == pytest.approx(0.4857, abs=1e-4)
    assert result.p_value == pytest.approx(34 / 70, rel=1e-12)
    assert result.odds_ratio == pytest.approx(9.0)
    assert result.method == "fisher_exact"


def test_fisher_equals_scipy_on_random_tables() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        n_t, n_b = (int(v) for v in rng.integers(1, 60, size=2))
        x_t, x_b = int(rng.integers(0, n_t + 1)), int(rng.integers(0, n_b + 1))
        expected = sps.fisher_exact([[x_t, n_t - x_t], [x_b, n_b - x_b]])
        result = fisher_exact_test(binary(x_t, n_t), binary(x_b, n_b))
        assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-15)
        odds = float(expected.statistic)
        if math.isfinite(odds):
            assert result.odds_ratio == pytest.approx(odds, rel=1e-12)
        else:
            assert result.odds_ratio is None
        assert 0 <= result.p_value <= 1
        assert_no_nan(result)


def test_fisher_odds_ratio_direction_is_treatment_over_baseline() -> None:
    # treatment odds 8/2 = 4, baseline odds 2/8 = 0.25 -> 16
    assert fisher_exact_test(binary(8, 10), binary(2, 10)).odds_ratio == pytest.approx(16.0)
    assert fisher_exact_test(binary(2, 10), binary(8, 10)).odds_ratio == pytest.approx(1 / 16)


def test_fisher_degenerate_tables() -> None:
    # infinite odds ratio (no baseline successes): None, p-value still defined
    infinite = fisher_exact_test(binary(5, 10), binary(0, 10))
    assert infinite.odds_ratio is None
    assert infinite.p_value == pytest.approx(float(sps.fisher_exact([[5, 5], [0, 10]]).pvalue))
    # no successes anywhere: 0/0 odds ratio, p = 1
    empty_margin = fisher_exact_test(binary(0, 10), binary(0, 12))
    assert empty_margin.odds_ratio is None and empty_margin.p_value == 1.0
    # zero odds ratio is a number, not a degenerate case
    assert fisher_exact_test(binary(0, 10), binary(4, 10)).odds_ratio == 0.0


def test_needs_exact() -> None:
    # lady tasting tea: every expected count is 4 * 4 / 8 = 2
    assert needs_exact(binary(3, 4), binary(1, 4))
    # expected counts 45/55 in both rows
    assert not needs_exact(binary(50, 100), binary(40, 100))
    # rare event: 3 successes in 2000 -> expected successes per arm 1.5
    assert needs_exact(binary(2, 1000), binary(1, 1000))
    # boundary: margins 10/10 x 10/10, every expected count exactly 5 (not below 5)
    assert not needs_exact(binary(6, 10), binary(4, 10))
    assert needs_exact(binary(6, 10), binary(4, 10), min_expected=5.01)
    # no successes anywhere: expected counts of 0
    assert needs_exact(binary(0, 500), binary(0, 500))


# --- omnibus: binary -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_omnibus_binary_equals_chi2_contingency(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    ns = rng.integers(50, 400, size=k)
    xs = rng.binomial(ns, rng.uniform(0.05, 0.4, size=k))
    table = np.column_stack([xs, ns - xs])
    chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
    arms = {f"arm{i}": binary(int(x), int(n)) for i, (x, n) in enumerate(zip(xs, ns, strict=True))}
    result = omnibus_test("binary", arms)
    assert result.status == "ok" and result.method == "chi_square_independence"
    assert result.statistic == pytest.approx(chi2, rel=1e-10)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.df == dof == k - 1
    assert result.df_denominator is None


def test_omnibus_binary_two_arms_is_squared_pooled_z() -> None:
    # closed form: for a 2x2 table Pearson's chi-square (no correction) equals the pooled z**2
    treatment, baseline = binary(5, 83), binary(12, 99)
    z = two_proportion_ztest(treatment, baseline)
    result = omnibus_test("binary", {"t": treatment, "b": baseline})
    assert z.statistic is not None
    assert result.statistic == pytest.approx(z.statistic**2, rel=1e-12)
    assert result.p_value == pytest.approx(z.p_value, rel=1e-10)


@pytest.mark.parametrize("rate", [0, 1])
def test_omnibus_binary_no_variation_anywhere(rate: int) -> None:
    arms = {"a": binary(40 * rate, 40), "b": binary(30 * rate, 30), "c": binary(9 * rate, 9)}
    result = omnibus_test("binary", arms)
    assert result == OmnibusResult(None, 2, None, "chi_square_independence", "zero_variance")


def test_omnibus_binary_equal_rates_gives_zero_statistic() -> None:
    result = omnibus_test("binary", {"a": binary(10, 100), "b": binary(20, 200)})
    assert result.statistic == pytest.approx(0.0, abs=1e-12) and result.p_value == 1.0


# --- omnibus: continuous (Welch's ANOVA) ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_omnibus_continuous_equals_statsmodels_welch_anova(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = [
        rng.normal(10.0, 2.0, size=40),
        rng.normal(10.8, 5.0, size=75),
        rng.lognormal(2.3, 0.4, size=25),
        rng.normal(9.5, 1.0, size=60),
    ]
    reference = anova_oneway(data, use_var="unequal")
    result = omnibus_test("continuous", {f"arm{i}": from_array(x) for i, x in enumerate(data)})
    assert result.status == "ok" and result.method == "welch_anova"
    assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-8)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-7)
    assert result.df == 3
    assert result.df_denominator == pytest.approx(float(reference.df_denom), rel=1e-8)


def test_omnibus_continuous_two_arms_is_squared_welch_t() -> None:
    # closed form: Welch's ANOVA with k = 2 is the Welch t-test (F = t**2, df2 = Welch df)
    rng = np.random.default_rng(7)
    treatment = from_array(rng.normal(5.2, 3.0, size=120))
    baseline = from_array(rng.normal(5.0, 1.5, size=80))
    t = welch_ttest(treatment, baseline)
    result = omnibus_test("continuous", {"t": treatment, "b": baseline})
    assert t.statistic is not None and t.df is not None
    assert result.statistic == pytest.approx(t.statistic**2, rel=1e-10)
    assert result.df_denominator == pytest.approx(t.df, rel=1e-10)
    assert result.p_value == pytest.approx(t.p_value, rel=1e-8)


def test_omnibus_continuous_degenerate_arms() -> None:
    ok = SampleStats(10, 50.0, 300.0)
    single = omnibus_test("continuous", {"a": ok, "b": SampleStats(1, 4.0, 16.0)})
    assert single == OmnibusResult(None, 1, None, "welch_anova", "n_too_small")
    constant = SampleStats(5, 10.0, 20.0)  # five 2.0s: zero variance
    flat = omnibus_test("continuous", {"a": ok, "b": constant, "c": ok})
    assert flat == OmnibusResult(None, 2, None, "welch_anova", "zero_variance")
    assert_no_nan(single)
    assert_no_nan(flat)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_omnibus_rejects_a_single_arm(kind: str) -> None:
    with pytest.raises(ValueError, match=r"at least 2 arms, got 1: \['only'\]"):
        omnibus_test(kind, {"only": binary(3, 10)})  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_omnibus_rejects_an_empty_arm(kind: str) -> None:
    with pytest.raises(ValueError, match=r"arm 'email_sms' is empty \(n=0\)"):
        omnibus_test(kind, {"control": binary(3, 10), "email_sms": SampleStats(0, 0, 0)})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [SampleStats(10, -1.0, 1.0), SampleStats(10, 11.0, 11.0), SampleStats(10, 2.5, 2.5)]
)
def test_binary_rejects_bad_success_counts_naming_the_arm(bad: SampleStats) -> None:
    with pytest.raises(ValueError, match=r"arm 'email'.*whole number between 0 and n=10"):
        omnibus_test("binary", {"control": binary(3, 10), "email": bad})
    with pytest.raises(ValueError, match=r"arm 'treatment'.*whole number between 0 and n=10"):
        fisher_exact_test(bad, binary(3, 10))
    with pytest.raises(ValueError, match=r"arm 'baseline'.*whole number between 0 and n=10"):
        needs_exact(binary(3, 10), bad)


def test_fisher_rejects_an_empty_arm() -> None:
    with pytest.raises(ValueError, match=r"arm 'baseline' is empty \(n=0\)"):
        fisher_exact_test(binary(3, 10), SampleStats(0, 0, 0))


def test_negative_unit_count_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="n must be a whole number >= 0"):
        SampleStats(-3, 0, 0)


def test_omnibus_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown metric kind 'ratio'"):
        omnibus_test("ratio", {"a": binary(1, 5), "b": binary(2, 5)})  # type: ignore[arg-type]
