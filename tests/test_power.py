"""Power analysis against statsmodels, closed-form sample-size formulas, published worked examples,
round trips and seeded simulations of the planned experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.stats import SampleStats, two_proportion_ztest, welch_ttest
from experiments.stats.power import Plan, mde_for_n, plan, power_at, sample_size_per_arm

Z975, Z80 = sps.norm.ppf(0.975), sps.norm.ppf(0.8)


# --- sample size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sd", "mde", "alpha", "power"),
    [(1.0, 0.5, 0.05, 0.8), (30.0, 3.0, 0.05, 0.8), (12.5, 0.7, 0.01, 0.9), (2.0, -0.1, 0.1, 0.7)],
)
def test_continuous_sample_size_equals_statsmodels(
    sd: float, mde: float, alpha: float, power: float
) -> None:
    # Cohen's d = mde / sd. Without the far rejection tail (module docstring) the two-sided test's
    # power is statsmodels' one-sided power at alpha / 2.
    solver = NormalIndPower()
    expected = solver.solve_power(
        abs(mde) / sd, alpha=alpha / 2, power=power, ratio=1.0, alternative="larger"
    )
    n = sample_size_per_arm("continuous", 50.0, sd**2, mde, alpha, power)
    assert n == math.ceil(expected)
    # statsmodels' two-sided solve counts the far tail too, which saves at most a unit or two
    two_sided = solver.solve_power(abs(mde) / sd, alpha=alpha, power=power, ratio=1.0)
    assert 0 <= n - two_sided < 2


def test_textbook_continuous_example() -> None:
    # d = 0.5, alpha 0.05 two-sided, power 0.8: 2 (1.96 + 0.8416)² / 0.25 = 62.8 -> 63 per group
    # with the normal approximation (the t-based power.t.test in R gives 64).
    assert sample_size_per_arm("continuous", 0.0, 1.0, 0.5) == 63


@pytest.mark.parametrize(
    ("p", "mde", "alpha", "power"),
    [
        (0.10, 0.02, 0.05, 0.8),
        (0.2, 0.03, 0.05, 0.8),
        (0.02, 0.004, 0.05, 0.9),
        (0.6, -0.05, 0.01, 0.8),
    ],
)
def test_binary_sample_size_is_the_unpooled_formula(
    p: float, mde: float, alpha: float, power: float
) -> None:
    k = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    p2 = p + mde
    expected = k**2 * (p * (1 - p) + p2 * (1 - p2)) / mde**2
    n = sample_size_per_arm("binary", p, None, mde, alpha, power)
    assert n == math.ceil(expected)
    # statsmodels' arcsine effect size (Cohen's h) is a different approximation: within 1%
    h = proportion_effectsize(p2, p)
    arcsine = NormalIndPower().solve_power(abs(h), alpha=alpha, power=power, ratio=1.0)
    assert n == pytest.approx(arcsine, rel=0.01)


def test_classic_worked_example_p10_mde2() -> None:
    # p = 0.10, +0.02 absolute, alpha 0.05 two-sided, power 0.8. Three formulas in circulation:
    # - ours, unpooled (variance of each arm at its own rate):  3,838.1 -> 3,839
    # - pooled (Fleiss, no continuity correction), null variance 2 pbar qbar at pbar = 0.11:
    #   3,840.8 -> 3,841 (the "classic ~3,841")
    # - Evan Miller's calculator (evanmiller.org/ab-testing/sample-size.html), null variance
    #   2 p q at the baseline rate: 3,622.6 -> 3,623
    assert sample_size_per_arm("binary", 0.10, None, 0.02) == 3839
    p, p2, pbar = 0.10, 0.12, 0.11
    alt_sd = math.sqrt(p * (1 - p) + p2 * (1 - p2))
    pooled = (Z975 * math.sqrt(2 * pbar * (1 - pbar)) + Z80 * alt_sd) ** 2 / 0.02**2
    miller = (Z975 * math.sqrt(2 * p * (1 - p)) + Z80 * alt_sd) ** 2 / 0.02**2
    assert math.ceil(pooled) == 3841
    assert math.ceil(miller) == 3623


def test_relative_mde_is_a_fraction_of_the_baseline() -> None:
    assert sample_size_per_arm("binary", 0.1, None, 0.2, relative=True) == sample_size_per_arm(
        "binary", 0.1, None, 0.02
    )
    assert sample_size_per_arm(
        "continuous", 40.0, 400.0, 0.05, relative=True
    ) == sample_size_per_arm("continuous", 40.0, 400.0, 2.0)


def test_more_arms_apply_bonferroni() -> None:
    # 3 arms = 2 comparisons with the baseline, each at alpha / 2
    expected = NormalIndPower().solve_power(
        0.1, alpha=0.0125, power=0.8, ratio=1.0, alternative="larger"
    )
    assert sample_size_per_arm("continuous", 0.0, 1.0, 0.1, arms=3) == math.ceil(expected)
    assert sample_size_per_arm("continuous", 0.0, 1.0, 0.1, arms=2) < math.ceil(expected)


def test_binary_variance_argument_is_ignored() -> None:
    assert sample_size_per_arm("binary", 0.3, 123.0, 0.05) == sample_size_per_arm(
        "binary", 0.3, None, 0.05
    )


# --- power and MDE -------------------------------------------------------------------------------


def test_power_at_equals_statsmodels() -> None:
    for n in (100, 1000, 5000):
        # d = 0.4 / 5; the power in the direction of the effect is the one-sided power at alpha/2
        expected = NormalIndPower().power(0.08, nobs1=n, alpha=0.025, alternative="larger")
        assert power_at("continuous", 10.0, 25.0, 0.4, n) == pytest.approx(expected, abs=1e-12)
        two_sided = NormalIndPower().power(0.08, nobs1=n, alpha=0.05)
        assert 0 < two_sided - power_at("continuous", 10.0, 25.0, 0.4, n) < 0.025


@pytest.mark.parametrize(
    ("kind", "mean", "variance", "mde"),
    [
        ("binary", 0.1, None, 0.02),
        ("binary", 0.2, None, 0.03),
        ("binary", 0.9, None, 0.01),
        ("continuous", 50.0, 900.0, 3.0),
        ("continuous", 0.0, 1.0, 0.05),
    ],
)
def test_round_trips(kind: str, mean: float, variance: float | None, mde: float) -> None:
    n = sample_size_per_arm(kind, mean, variance, mde)  # type: ignore[arg-type]
    assert power_at(kind, mean, variance, mde, n) >= 0.8  # type: ignore[arg-type]
    assert power_at(kind, mean, variance, mde, n - 1) < 0.8  # type: ignore[arg-type]
    reachable = mde_for_n(kind, mean, variance, n)  # type: ignore[arg-type]
    assert reachable <= mde
    assert reachable == pytest.approx(mde, rel=1e-3)
    # and the MDE reached at n is detected with exactly the target power
    assert power_at(kind, mean, variance, reachable, n) == pytest.approx(0.8, abs=1e-12)  # type: ignore[arg-type]


def test_binary_mde_solves_the_sample_size_equation() -> None:
    delta = mde_for_n("binary", 0.05, None, 10_000, alpha=0.01, power=0.9)
    k = sps.norm.ppf(0.995) + sps.norm.ppf(0.9)
    lhs = delta * math.sqrt(10_000)
    rhs = k * math.sqrt(0.05 * 0.95 + (0.05 + delta) * (0.95 - delta))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_mde_undetectable_for_a_tiny_binary_sample() -> None:
    # n <= k² p / q: even a rate of 1 in the treatment is not detectable (k² = 7.85, p/q = 1)
    with pytest.raises(ValueError, match=r"no increase of the rate 0\.5 reaches power"):
        mde_for_n("binary", 0.5, None, 7)
    assert mde_for_n("binary", 0.5, None, 8) < 0.5


# --- plan ----------------------------------------------------------------------------------------


def test_plan_equal_and_unequal_weights() -> None:
    n2 = sample_size_per_arm("binary", 0.1, None, 0.02)
    even = plan("binary", 0.1, None, 0.02, 0.05, 0.8, [1, 1], 500.0)
    assert even == Plan(
        n2,
        2,
        2 * n2,
        500.0,
        2 * n2 / 500.0,
        {d: mde_for_n("binary", 0.1, None, 250 * d) for d in (14, 28, 56)},
    )
    # 3 arms 1:1:2: Bonferroni n, and the small arms get a quarter of the inflow each
    n3 = sample_size_per_arm("binary", 0.1, None, 0.02, arms=3)
    uneven = plan("binary", 0.1, None, 0.02, 0.05, 0.8, [1, 1, 2], 1000.0)
    assert (uneven.n_per_arm, uneven.arms, uneven.total) == (n3, 3, 4 * n3)
    assert uneven.days == pytest.approx(4 * n3 / 1000.0)
    assert uneven.mde_in_days[28] == pytest.approx(
        mde_for_n("binary", 0.1, None, 7000, arms=3), rel=1e-12
    )
    # the plan's duration is where the reachable MDE crosses the target
    assert uneven.mde_in_days[14] > 0.02 > uneven.mde_in_days[28]


def test_plan_without_inflow_and_with_a_trickle() -> None:
    no_inflow = plan("continuous", 50.0, 900.0, 3.0, 0.05, 0.8, [0.5, 0.5], None)
    assert (no_inflow.days, no_inflow.daily_inflow, no_inflow.mde_in_days) == (None, None, {})
    trickle = plan("binary", 0.5, None, 0.1, 0.05, 0.8, [1, 1], 1.0)
    # 7 units per arm after 14 days cannot detect any increase of 0.5; 14 and 28 units can
    assert sorted(trickle.mde_in_days) == [28, 56]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size_per_arm("ordinal", 0.1, None, 0.02), "unknown metric kind"),  # type: ignore[arg-type]
        (lambda: sample_size_per_arm("binary", 1.2, None, 0.02), "strictly between 0 and 1"),
        (lambda: sample_size_per_arm("binary", 0.99, None, 0.02), "is not a rate"),
        (lambda: sample_size_per_arm("binary", 0.1, None, 0.0), "mde must not be 0"),
        (
            lambda: sample_size_per_arm("continuous", 1.0, None, 0.1),
            "baseline_variance is required",
        ),
        (lambda: sample_size_per_arm("continuous", 1.0, -1.0, 0.1), "must be > 0"),
        (lambda: sample_size_per_arm("continuous", 1.0, 1.0, 0.1, alpha=0), "alpha must be"),
        (lambda: sample_size_per_arm("continuous", 1.0, 1.0, 0.1, power=1), "power must be"),
        (lambda: sample_size_per_arm("continuous", 1.0, 1.0, 0.1, power=0.01), "below alpha/2"),
        (lambda: sample_size_per_arm("continuous", 1.0, 1.0, 0.1, arms=1), "arms must be"),
        (lambda: sample_size_per_arm("continuous", 0.0, 1.0, 0.1, relative=True), "relative mde"),
        (lambda: sample_size_per_arm("continuous", 1.0, 1.0, float("nan")), "mde must be a finite"),
        (lambda: mde_for_n("continuous", 1.0, 1.0, 1), "n_per_arm must be a whole number >= 2"),
        (lambda: power_at("continuous", 1.0, 1.0, 0.1, 10.5), "n_per_arm must be"),  # type: ignore[arg-type]
        (lambda: plan("binary", 0.1, None, 0.02, 0.05, 0.8, [1], 10.0), "at least 2 arm weights"),
        (lambda: plan("binary", 0.1, None, 0.02, 0.05, 0.8, [1, 0], 10.0), r"arm_weights\[1\]"),
        (lambda: plan("binary", 0.1, None, 0.02, 0.05, 0.8, [1, 1], 0.0), "daily_inflow must be"),
    ],
)
def test_bad_input_is_a_clear_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# --- seeded simulations: the plan delivers its power ---------------------------------------------

SIMS = 4000


@pytest.mark.slow
def test_binary_plan_achieves_its_power_in_simulation() -> None:
    # p = 0.20, +0.03: 2,940 per arm planned; 4,000 simulated experiments analysed with the v1
    # pooled two-proportion z-test.
    p, mde = 0.20, 0.03
    n = sample_size_per_arm("binary", p, None, mde)
    assert n == 2940
    rng = np.random.default_rng(20260101)
    x_b = rng.binomial(n, p, size=SIMS)
    x_t = rng.binomial(n, p + mde, size=SIMS)
    rejected = 0
    for xt, xb in zip(x_t, x_b, strict=True):
        result = two_proportion_ztest(
            SampleStats(n, int(xt), int(xt)), SampleStats(n, int(xb), int(xb))
        )
        assert result.p_value is not None
        rejected += result.p_value < 0.05
    assert rejected / SIMS == pytest.approx(0.8, abs=0.03)


@pytest.mark.slow
def test_continuous_plan_achieves_its_power_in_simulation() -> None:
    # Skewed revenue, Gamma(shape 2, scale 25): mean 50, variance 1,250; +3 absolute: 2,181 per
    # arm planned; 4,000 simulated experiments analysed with the v1 Welch t-test.
    shape, scale, mde = 2.0, 25.0, 3.0
    n = sample_size_per_arm("continuous", shape * scale, shape * scale**2, mde)
    assert n == 2181
    rng = np.random.default_rng(20260102)
    rejected = 0
    for _ in range(SIMS // 500):
        b = rng.gamma(shape, scale, size=(500, n))
        t = rng.gamma(shape, scale, size=(500, n)) + mde
        for arm_t, arm_b in zip(t, b, strict=True):
            result = welch_ttest(
                SampleStats(n, float(arm_t.sum()), float((arm_t**2).sum())),
                SampleStats(n, float(arm_b.sum()), float((arm_b**2).sum())),
            )
            assert result.p_value is not None
            rejected += result.p_value < 0.05
    assert rejected / SIMS == pytest.approx(0.8, abs=0.03)
