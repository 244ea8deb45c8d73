"""CUPED against per-unit arrays, statsmodels OLS / ANCOVA, the rho² variance reduction and a
seeded A/A simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from experiments.stats import SampleStats, welch_ttest
from experiments.stats.cuped import CupedResult, PairedStats, cuped_adjust


def paired(x: np.ndarray, y: np.ndarray) -> PairedStats:
    return PairedStats(
        len(x),
        float(x.sum()),
        float((x**2).sum()),
        float(y.sum()),
        float((y**2).sum()),
        float((x * y).sum()),
    )


def correlated(
    rng: np.random.Generator, n: int, rho: float, effect: float = 0.0, size: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Pre-period X and outcome Y with corr(X, Y) = rho, unit variances, Y shifted by ``effect``."""
    x = rng.normal(10.0, 1.0, size=(*size, n))
    noise = rng.normal(0.0, 1.0, size=(*size, n))
    y = 5.0 + effect + rho * (x - 10.0) + math.sqrt(1 - rho**2) * noise
    return x, y


def revenue_arms(seed: int = 11) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Skewed revenue: pre-period spend X, outcome Y = a share of X plus noise; treatment +3."""
    rng = np.random.default_rng(seed)
    arms = {}
    for name, n, effect in [("control", 3000, 0.0), ("offer", 2800, 3.0), ("pause", 2900, 1.0)]:
        x = rng.gamma(2.0, 30.0, size=n)
        y = 0.8 * x + rng.gamma(2.0, 10.0, size=n) + effect
        arms[name] = (x, y)
    return arms


def test_adjusted_stats_equal_the_per_unit_computation() -> None:
    data = revenue_arms()
    result = cuped_adjust({k: paired(x, y) for k, (x, y) in data.items()})
    x_all = np.concatenate([x for x, _ in data.values()])
    y_all = np.concatenate([y for _, y in data.values()])
    theta = np.polyfit(x_all, y_all, 1)[0]  # pooled OLS slope
    assert result.status == "ok"
    assert result.theta == pytest.approx(theta, rel=1e-9)
    for name, (x, y) in data.items():
        z = y - theta * (x - x_all.mean())
        s = result.adjusted[name]
        assert s.n == len(z)
        assert s.sum == pytest.approx(z.sum(), rel=1e-9)
        assert s.sum_squares == pytest.approx((z**2).sum(), rel=1e-9)
        assert s.variance == pytest.approx(z.var(ddof=1), rel=1e-7)


def test_theta_is_the_statsmodels_ols_slope_on_pooled_data() -> None:
    rng = np.random.default_rng(5)
    xa, ya = correlated(rng, 2000, 0.6)
    xb, yb = correlated(rng, 1800, 0.6, effect=0.2)
    result = cuped_adjust({"a": paired(xa, ya), "b": paired(xb, yb)})
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    assert result.theta == pytest.approx(fit.params[1], rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_welch_on_adjusted_stats_is_ancova(seed: int) -> None:
    # CUPED ≈ OLS of Y on [1, treatment dummy, X - mean X] (heteroscedasticity-robust HC2 errors,
    # which match Welch's unpooled variances): the two differ only by the pooled (total) versus the
    # within-arm slope. Measured: estimates within 3e-5 standard errors, standard errors within
    # 0.01%; asserted with margin.
    rng = np.random.default_rng(seed)
    xb, yb = correlated(rng, 4000, 0.7)
    xt, yt = correlated(rng, 4000, 0.7, effect=0.05)
    result = cuped_adjust({"treatment": paired(xt, yt), "baseline": paired(xb, yb)})
    welch = welch_ttest(result.adjusted["treatment"], result.adjusted["baseline"])
    x, y = np.concatenate([xt, xb]), np.concatenate([yt, yb])
    dummy = np.concatenate([np.ones(len(xt)), np.zeros(len(xb))])
    design = sm.add_constant(np.column_stack([dummy, x - x.mean()]))
    fit = sm.OLS(y, design).fit(cov_type="HC2")
    se = float(fit.bse[1])
    assert welch.abs_lift is not None and welch.abs_ci is not None
    assert welch.abs_lift == pytest.approx(fit.params[1], abs=0.001 * se)
    assert welch.df is not None
    welch_se = (welch.abs_ci[1] - welch.abs_ci[0]) / 2 / sps.t.ppf(0.975, welch.df)
    assert welch_se == pytest.approx(se, rel=0.002)


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.9])
def test_variance_reduction_is_rho_squared(rho: float) -> None:
    rng = np.random.default_rng(int(rho * 10))
    xa, ya = correlated(rng, 20_000, rho)
    xb, yb = correlated(rng, 20_000, rho, effect=0.1)
    result = cuped_adjust({"a": paired(xa, ya), "b": paired(xb, yb)})
    assert result.variance_reduction == pytest.approx(rho**2, abs=0.015)
    # and it is the drop in the pooled within-arm variance the tests will see
    before = result_variance({"a": paired(xa, ya).outcome, "b": paired(xb, yb).outcome})
    after = result_variance(result.adjusted)
    assert result.variance_reduction == pytest.approx(1 - after / before, rel=1e-9)


def result_variance(arms: dict[str, SampleStats]) -> float:
    return sum(s.variance * (s.n - 1) for s in arms.values()) / sum(s.n - 1 for s in arms.values())


def test_useless_covariate_changes_almost_nothing() -> None:
    rng = np.random.default_rng(8)
    xa, ya = correlated(rng, 5000, 0.0)
    xb, yb = correlated(rng, 5000, 0.0)
    result = cuped_adjust({"a": paired(xa, ya), "b": paired(xb, yb)})
    assert result.theta is not None and abs(result.theta) < 0.05
    assert result.variance_reduction is not None and abs(result.variance_reduction) < 0.005


@pytest.mark.slow
def test_aa_false_positive_rate_with_cuped_and_narrower_intervals() -> None:
    # 4,000 seeded A/A experiments, 300 units per arm, rho = 0.7: the CUPED Welch test keeps the
    # false-positive rate at alpha and its interval is about sqrt(1 - 0.49) = 0.71 as wide.
    rng = np.random.default_rng(2013)
    sims, n = 4000, 300
    xa, ya = correlated(rng, n, 0.7, size=(sims,))
    xb, yb = correlated(rng, n, 0.7, size=(sims,))
    rejections_cuped = rejections_raw = 0
    ratios = []
    for i in range(sims):
        a, b = paired(xa[i], ya[i]), paired(xb[i], yb[i])
        adjusted = cuped_adjust({"a": a, "b": b}).adjusted
        cuped = welch_ttest(adjusted["a"], adjusted["b"])
        raw = welch_ttest(a.outcome, b.outcome)
        assert cuped.p_value is not None and raw.p_value is not None
        assert cuped.abs_ci is not None and raw.abs_ci is not None
        rejections_cuped += cuped.p_value < 0.05
        rejections_raw += raw.p_value < 0.05
        ratios.append((cuped.abs_ci[1] - cuped.abs_ci[0]) / (raw.abs_ci[1] - raw.abs_ci[0]))
    assert rejections_cuped / sims == pytest.approx(0.05, abs=0.015)
    assert rejections_raw / sims == pytest.approx(0.05, abs=0.015)
    assert float(np.mean(ratios)) == pytest.approx(math.sqrt(1 - 0.49), abs=0.02)


# --- degenerate cases and bad input --------------------------------------------------------------


def test_constant_covariate_returns_the_unadjusted_statistics() -> None:
    y_a, y_b = np.array([1.0, 3.0, 4.0]), np.array([2.0, 2.5])
    arms = {"a": paired(np.full(3, 7.0), y_a), "b": paired(np.full(2, 7.0), y_b)}
    result = cuped_adjust(arms)
    assert result == CupedResult(
        None,
        {"a": arms["a"].outcome, "b": arms["b"].outcome},
        None,
        "no_covariate_variance",
    )


def test_fewer_than_two_units_in_total_is_n_too_small() -> None:
    arms = {"a": PairedStats(1, 2.0, 4.0, 3.0, 9.0, 6.0), "b": PairedStats(0, 0, 0, 0, 0, 0)}
    result = cuped_adjust(arms)
    assert result.status == "n_too_small" and result.theta is None
    assert result.adjusted == {"a": SampleStats(1, 3.0, 9.0), "b": SampleStats(0, 0, 0)}


def test_constant_outcome_has_no_variance_reduction() -> None:
    x_a, x_b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 6.0])
    result = cuped_adjust({"a": paired(x_a, np.full(3, 5.0)), "b": paired(x_b, np.full(2, 5.0))})
    assert result.status == "zero_outcome_variance"
    assert result.theta == pytest.approx(0.0, abs=1e-12)
    assert result.variance_reduction is None
    assert result.adjusted["a"].mean == pytest.approx(5.0)


def test_an_empty_arm_is_carried_through() -> None:
    rng = np.random.default_rng(9)
    x, y = correlated(rng, 500, 0.5)
    result = cuped_adjust({"a": paired(x, y), "b": PairedStats(0, 0, 0, 0, 0, 0)})
    assert result.status == "ok"
    assert result.adjusted["b"] == SampleStats(0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 0, 0, 0, 0), "n must be a whole number >= 0"),
        ((2, 1.0, -1.0, 1.0, 1.0, 1.0), "sum_x2 must be >= 0"),
        ((2, 1.0, 1.0, 1.0, -1.0, 1.0), "sum_y2 must be >= 0"),
        ((2, float("nan"), 1.0, 1.0, 1.0, 1.0), "sum_x must be a finite number"),
        ((2, 1.0, 1.0, 1.0, 1.0, float("inf")), "sum_xy must be a finite number"),
        ((0, 1.0, 0, 0, 0, 0), "n=0 must have every sum 0"),
    ],
)
def test_paired_stats_rejects_bad_input(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PairedStats(*args)  # type: ignore[arg-type]


def test_cuped_rejects_a_single_arm_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="at least 2 arms"):
        cuped_adjust({"a": PairedStats(3, 1, 1, 1, 1, 1)})
    with pytest.raises(ValueError, match="arm 'b' must be PairedStats"):
        cuped_adjust({"a": PairedStats(3, 1, 1, 1, 1, 1), "b": SampleStats(3, 1, 1)})  # type: ignore[dict-item]
