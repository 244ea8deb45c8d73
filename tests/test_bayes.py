"""The Bayesian engine against closed forms (Evan Miller's sum, uniform priors, the normal partial
expectation), direct quadrature and large seeded Monte Carlo draws of the posteriors."""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as sps
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import SampleStats
from experiments.stats.bayes import (
    BayesResult,
    BetaPrior,
    NormalPrior,
    bayes_binary,
    bayes_continuous,
)

MC_DRAWS = 1_000_000


def binary(successes: int, n: int) -> SampleStats:
    return SampleStats(n, successes, successes)


def from_array(x: np.ndarray) -> SampleStats:
    return SampleStats(len(x), float(x.sum()), float((x**2).sum()))


def assert_no_nan(result: BayesResult) -> None:
    for value in astuple(result):
        for v in value if isinstance(value, tuple) else (value,):
            assert not (isinstance(v, float) and not math.isfinite(v)), result


def evan_miller_p_b_beats_a(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(p_B > p_A) for p_A ~ Beta(a_a, b_a), p_B ~ Beta(a_b, b_b), integer a_b.

    https://www.evanmiller.org/bayesian-ab-testing.html, "Closed-form formula":
    sum_{i=0}^{a_B-1} B(a_A+i, b_A+b_B) / ((b_B+i) B(1+i, b_B) B(a_A, b_A)).
    """
    total = 0.0
    for i in range(a_b):
        total += math.exp(
            special.betaln(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - special.betaln(1 + i, b_b)
            - special.betaln(a_a, b_a)
        )
    return total


def beta_draws(
    rng: np.random.Generator, prior: BetaPrior, s: SampleStats, size: int = MC_DRAWS
) -> np.ndarray:
    return rng.beta(prior.alpha + s.sum, prior.beta + s.n - s.sum, size=size)


# --- binary: chance to beat ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_t", "n_t", "x_b", "n_b"),
    [
        (120, 1000, 100, 1000),
        (3, 10, 5, 12),
        (40, 200, 41, 180),
        (0, 50, 2, 50),
        (700, 5000, 610, 5000),
    ],
)
def test_chance_to_beat_equals_evan_millers_closed_form(
    x_t: int, n_t: int, x_b: int, n_b: int
) -> None:
    result = bayes_binary(binary(x_t, n_t), binary(x_b, n_b))
    # Beta(1, 1) prior: treatment is B, baseline is A in Evan Miller's notation.
    expected = evan_miller_p_b_beats_a(1 + x_b, 1 + n_b - x_b, 1 + x_t, 1 + n_t - x_t)
    assert result.chance_to_beat == pytest.approx(expected, abs=1e-9)
    assert result.status == "ok" and result.method == "beta_binomial"


def test_uniform_priors_without_data_are_a_coin_flip() -> None:
    # Beta(1,1) vs Beta(1,1): P = 1/2; T - B has the triangular density on [-1, 1], so its 2.5%
    # quantile solves (1 + d)^2 / 2 = 0.025, d = sqrt(0.05) - 1; E[(B - T)+] = 1/6.
    result = bayes_binary(binary(0, 0), binary(0, 0))
    assert result.chance_to_beat == pytest.approx(0.5, abs=1e-12)
    assert result.abs_lift_mean == 0.0
    assert result.risk == pytest.approx(1 / 6, abs=1e-12)
    assert result.risk_baseline == pytest.approx(1 / 6, abs=1e-12)
    assert result.credible_interval is not None
    lo, hi = result.credible_interval
    assert lo == pytest.approx(math.sqrt(0.05) - 1, abs=1e-9)
    assert hi == pytest.approx(1 - math.sqrt(0.05), abs=1e-9)
    assert result.status == "prior_only"


@pytest.mark.parametrize(
    ("treatment", "baseline", "prior"),
    [
        (binary(120, 1000), binary(100, 1000), BetaPrior()),
        (binary(7, 40), binary(3, 38), BetaPrior(0.5, 0.5)),  # Jeffreys: no integer closed form
        (binary(2050, 20000), binary(2000, 20000), BetaPrior(2.5, 20.0)),
    ],
)
def test_binary_matches_monte_carlo_of_the_posteriors(
    treatment: SampleStats, baseline: SampleStats, prior: BetaPrior
) -> None:
    result = bayes_binary(treatment, baseline, prior)
    rng = np.random.default_rng(20130205)
    diff = beta_draws(rng, prior, treatment) - beta_draws(rng, prior, baseline)
    assert result.chance_to_beat == pytest.approx(np.mean(diff > 0), abs=0.002)
    for value, sample in [
        (result.risk, np.maximum(-diff, 0)),
        (result.risk_baseline, np.maximum(diff, 0)),
    ]:
        # 5 Monte Carlo standard errors
        assert value == pytest.approx(sample.mean(), abs=5 * sample.std() / math.sqrt(MC_DRAWS))
    assert result.credible_interval is not None
    mc_lo, mc_hi = np.quantile(diff, [0.025, 0.975])
    assert result.credible_interval == pytest.approx((mc_lo, mc_hi), abs=0.01 * diff.std())


def test_binary_credible_interval_tails_hold_alpha_by_direct_quadrature() -> None:
    treatment, baseline = binary(30, 150), binary(22, 160)
    result = bayes_binary(treatment, baseline, alpha=0.1)
    t, b = sps.beta(31, 121), sps.beta(23, 139)
    assert result.credible_interval is not None
    for d, tail in zip(result.credible_interval, (0.05, 0.95), strict=True):
        cdf, _ = integrate.quad(lambda x, d=d: b.pdf(x) * t.cdf(x + d), 0, 1, epsabs=1e-12)
        assert cdf == pytest.approx(tail, abs=1e-7)


def test_binary_lift_and_risks_are_consistent() -> None:
    result = bayes_binary(binary(55, 400), binary(48, 410), BetaPrior(2, 3))
    assert result.abs_lift_mean == pytest.approx(57 / 405 - 50 / 415, abs=1e-15)
    assert result.risk is not None and result.risk_baseline is not None
    # E[(T-B)+] - E[(B-T)+] = E[T - B]
    assert result.risk_baseline - result.risk == pytest.approx(result.abs_lift_mean, abs=1e-9)


def test_monte_carlo_option_is_seeded_and_agrees_with_quadrature() -> None:
    args = (binary(120, 1000), binary(100, 1000))
    exact = bayes_binary(*args)
    first = bayes_binary(*args, draws=200_000, seed=7)
    assert first == bayes_binary(*args, draws=200_000, seed=7)
    assert first.chance_to_beat == pytest.approx(exact.chance_to_beat, abs=0.004)
    assert first.risk == pytest.approx(exact.risk, rel=0.05)


def test_stronger_prior_shrinks_towards_no_difference() -> None:
    # A Beta(50, 450) prior (mean 0.1, worth 500 units) pulls both arms towards 0.1: the lift and
    # the chance to beat move towards 0 and 0.5, the interval narrows.
    data = (binary(30, 200), binary(20, 200))
    flat = bayes_binary(*data)
    strong = bayes_binary(*data, prior=BetaPrior(50, 450))
    assert flat.abs_lift_mean is not None and strong.abs_lift_mean is not None
    assert 0 < strong.abs_lift_mean < flat.abs_lift_mean
    assert flat.chance_to_beat is not None and strong.chance_to_beat is not None
    assert 0.5 < strong.chance_to_beat < flat.chance_to_beat
    assert flat.credible_interval is not None and strong.credible_interval is not None
    width = [ci[1] - ci[0] for ci in (flat.credible_interval, strong.credible_interval)]
    assert width[1] < width[0]


def test_an_empty_arm_has_the_prior_as_its_posterior() -> None:
    prior = BetaPrior(2, 8)
    result = bayes_binary(binary(0, 0), binary(30, 100), prior)
    assert result.status == "prior_only"
    assert result.abs_lift_mean == pytest.approx(2 / 10 - 32 / 110, abs=1e-15)
    expected = evan_miller_p_b_beats_a(32, 78, 2, 8)
    assert result.chance_to_beat == pytest.approx(expected, abs=1e-9)
    assert_no_nan(result)


@pytest.mark.parametrize(
    ("treatment", "baseline"),
    [
        (binary(0, 10), binary(10, 10)),
        (binary(10, 10), binary(0, 10)),
        (binary(5_000_000, 10_000_000), binary(5_001_000, 10_000_000)),
        (binary(0, 1_000_000), binary(0, 1_000_000)),
    ],
)
def test_binary_extremes_stay_finite_and_in_range(
    treatment: SampleStats, baseline: SampleStats
) -> None:
    result = bayes_binary(treatment, baseline)
    assert_no_nan(result)
    assert result.chance_to_beat is not None and 0 <= result.chance_to_beat <= 1
    assert result.risk is not None and result.risk >= 0
    assert result.credible_interval is not None
    lo, hi = result.credible_interval
    assert result.abs_lift_mean is not None and lo < result.abs_lift_mean < hi


def test_binary_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="treatment arm: sum"):
        bayes_binary(SampleStats(10, 11, 11), binary(1, 10))
    with pytest.raises(ValueError, match="draws must be a whole number"):
        bayes_binary(binary(1, 10), binary(1, 10), draws=-1)
    with pytest.raises(ValueError, match="alpha must be strictly between"):
        bayes_binary(binary(1, 10), binary(1, 10), alpha=1.5)
    with pytest.raises(ValueError, match=r"BetaPrior.alpha must be a finite number > 0"):
        BetaPrior(0, 1)
    with pytest.raises(ValueError, match=r"BetaPrior.beta must be a finite number > 0"):
        BetaPrior(1, float("nan"))


# --- continuous ----------------------------------------------------------------------------------


def revenue_arms(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 26.0, size=1500), rng.gamma(2.0, 25.0, size=1400)


def test_flat_prior_is_the_normal_likelihood() -> None:
    t, b = revenue_arms()
    result = bayes_continuous(from_array(t), from_array(b))
    d = t.mean() - b.mean()
    sd = math.sqrt(t.var(ddof=1) / len(t) + b.var(ddof=1) / len(b))
    assert result.abs_lift_mean == pytest.approx(d, rel=1e-9)
    assert result.chance_to_beat == pytest.approx(sps.norm.cdf(d / sd), abs=1e-9)
    # the equal-tailed interval of N(d, V) is the unequal-variance z interval
    ci = CompareMeans(DescrStatsW(t), DescrStatsW(b)).zconfint_diff(alpha=0.05, usevar="unequal")
    assert result.credible_interval == pytest.approx(ci, rel=1e-9)
    assert result.status == "ok" and result.method == "normal"


@pytest.mark.parametrize("seed", [3, 4])
def test_continuous_risk_closed_form_matches_monte_carlo(seed: int) -> None:
    t, b = revenue_arms(seed)
    result = bayes_continuous(from_array(t), from_array(b))
    d = t.mean() - b.mean()
    sd = math.sqrt(t.var(ddof=1) / len(t) + b.var(ddof=1) / len(b))
    x = np.random.default_rng(seed + 100).normal(d, sd, size=MC_DRAWS)
    assert result.chance_to_beat == pytest.approx(np.mean(x > 0), abs=0.002)
    for value, sample in [
        (result.risk, np.maximum(-x, 0)),
        (result.risk_baseline, np.maximum(x, 0)),
    ]:
        assert value == pytest.approx(sample.mean(), abs=5 * sample.std() / math.sqrt(MC_DRAWS))


def test_normal_prior_is_the_conjugate_update_by_quadrature() -> None:
    # Posterior of the difference computed by brute force: prior density x likelihood on a grid.
    t, b = revenue_arms(5)
    prior = NormalPrior(mean=1.0, variance=4.0)
    result = bayes_continuous(from_array(t), from_array(b), prior)
    d = t.mean() - b.mean()
    sd = math.sqrt(t.var(ddof=1) / len(t) + b.var(ddof=1) / len(b))
    grid = np.linspace(-40, 40, 400_001)
    weights = sps.norm.pdf(grid, 1.0, 2.0) * sps.norm.pdf(d, grid, sd)
    weights /= weights.sum()
    assert result.abs_lift_mean == pytest.approx(float((grid * weights).sum()), abs=1e-6)
    assert result.chance_to_beat == pytest.approx(float(weights[grid > 0].sum()), abs=1e-4)
    assert result.risk == pytest.approx(float((np.maximum(-grid, 0) * weights).sum()), abs=1e-5)


def test_normal_prior_shrinks_towards_its_mean() -> None:
    t, b = revenue_arms(6)
    data = (from_array(t), from_array(b))
    flat = bayes_continuous(*data)
    sceptical = bayes_continuous(*data, prior=NormalPrior(0.0, 1.0))
    assert flat.abs_lift_mean is not None and sceptical.abs_lift_mean is not None
    assert abs(sceptical.abs_lift_mean) < abs(flat.abs_lift_mean)
    assert flat.chance_to_beat is not None and sceptical.chance_to_beat is not None
    assert abs(sceptical.chance_to_beat - 0.5) < abs(flat.chance_to_beat - 0.5)
    assert flat.credible_interval is not None and sceptical.credible_interval is not None
    widths = [ci[1] - ci[0] for ci in (flat.credible_interval, sceptical.credible_interval)]
    assert widths[1] < widths[0]
    # a huge prior variance is the flat prior in the limit
    vague = bayes_continuous(*data, prior=NormalPrior(0.0, 1e12))
    assert vague.chance_to_beat == pytest.approx(flat.chance_to_beat, abs=1e-9)


@pytest.mark.parametrize(
    ("treatment", "baseline"),
    [
        (SampleStats(1, 5.0, 25.0), SampleStats(10, 50.0, 300.0)),
        (SampleStats(10, 50.0, 300.0), SampleStats(0, 0, 0)),
    ],
)
def test_continuous_n_too_small(treatment: SampleStats, baseline: SampleStats) -> None:
    result = bayes_continuous(treatment, baseline, NormalPrior(0.0, 1.0))
    assert result == BayesResult("normal", None, None, None, None, None, "n_too_small")


def test_continuous_zero_variance_keeps_only_the_lift() -> None:
    result = bayes_continuous(SampleStats(5, 10.0, 20.0), SampleStats(4, 4.0, 4.0))
    assert result == BayesResult("normal", 1.0, None, None, None, None, "zero_variance")


def test_continuous_extreme_effect_stays_finite() -> None:
    result = bayes_continuous(SampleStats(1000, 1e6, 1.1e9), SampleStats(1000, 0.0, 1000.0))
    assert_no_nan(result)
    assert result.chance_to_beat == 1.0 and result.risk == 0.0


def test_normal_prior_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="variance must be a finite number > 0"):
        NormalPrior(0.0, 0.0)
    with pytest.raises(ValueError, match="has no effect with a flat prior"):
        NormalPrior(1.0, None)
    with pytest.raises(ValueError, match="mean must be a finite number"):
        NormalPrior(float("inf"), 1.0)
