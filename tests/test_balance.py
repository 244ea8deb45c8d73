"""Covariate balance table against a direct numpy computation of the standardised mean
difference."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.stats import SampleStats
from experiments.stats.balance import BalanceRow, balance_table


def from_array(x: np.ndarray) -> SampleStats:
    return SampleStats(len(x), float(x.sum()), float((x**2).sum()))


def numpy_smd(treatment: np.ndarray, baseline: np.ndarray) -> float:
    pooled = np.sqrt((treatment.var(ddof=1) + baseline.var(ddof=1)) / 2)
    return float((treatment.mean() - baseline.mean()) / pooled)


def _raw_covariates(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    sizes = {"control": 800, "email": 750, "email_sms": 820}
    shift = {"control": 0.0, "email": 0.0, "email_sms": 0.35}  # email_sms skews on tenure
    return {
        "tenure_days": {
            arm: rng.lognormal(5.0 + shift[arm], 0.8, size=n) for arm, n in sizes.items()
        },
        "monthly_plan": {
            arm: rng.binomial(1, 0.6, size=n).astype(float) for arm, n in sizes.items()
        },
        "days_since_active": {arm: rng.gamma(2.0, 7.0, size=n) for arm, n in sizes.items()},
    }


def test_smd_and_means_equal_numpy() -> None:
    raw = _raw_covariates(np.random.default_rng(42))
    covariates = {c: {a: from_array(x) for a, x in arms.items()} for c, arms in raw.items()}
    rows = balance_table(covariates, baseline="control")
    assert [r.covariate for r in rows] == ["tenure_days", "monthly_plan", "days_since_active"]
    for row in rows:
        arms = raw[row.covariate]
        assert list(row.means) == ["control", "email", "email_sms"]
        assert list(row.smd) == ["email", "email_sms"]
        for arm, x in arms.items():
            assert row.means[arm] == pytest.approx(x.mean(), rel=1e-12)
        for arm in ("email", "email_sms"):
            expected = numpy_smd(arms[arm], arms["control"])
            assert row.smd[arm] == pytest.approx(expected, rel=1e-8, abs=1e-12)
        assert row.flagged == any(
            abs(numpy_smd(arms[a], arms["control"])) > 0.1 for a in ("email", "email_sms")
        )
    # the planted shift of 0.35 on the log scale is flagged; the randomised ones are not
    assert [r.flagged for r in rows] == [True, False, False]


def test_threshold_is_strict_and_configurable() -> None:
    # closed form: means 0 and 1, both sample variances 16 / 4 = 4 -> smd = 1 / sqrt(4) = 0.5
    base = from_array(np.array([-2.0, 2.0, -2.0, 2.0, 0.0]))
    treat = from_array(np.array([-1.0, 3.0, -1.0, 3.0, 1.0]))
    covariates = {"x": {"b": base, "t": treat}}
    (row,) = balance_table(covariates, "b")
    assert row.smd["t"] == 0.5
    assert balance_table(covariates, "b", threshold=0.5)[0].flagged is False  # |0.5| is not > 0.5
    assert balance_table(covariates, "b", threshold=0.49)[0].flagged is True
    assert balance_table({"x": {"b": treat, "t": base}}, "b")[0].smd["t"] == pytest.approx(-0.5)


def test_undefined_smd() -> None:
    same_constant = {"control": SampleStats(5, 10.0, 20.0), "offer": SampleStats(3, 6.0, 12.0)}
    different_constant = {"control": SampleStats(5, 0.0, 0.0), "offer": SampleStats(3, 3.0, 3.0)}
    one_unit = {"control": SampleStats(5, 10.0, 30.0), "offer": SampleStats(1, 7.0, 49.0)}
    rows = balance_table(
        {"plan": same_constant, "region": different_constant, "mrr": one_unit}, "control"
    )
    assert rows == [
        BalanceRow("plan", {"control": 2.0, "offer": 2.0}, {"offer": None}, False),
        BalanceRow("region", {"control": 0.0, "offer": 1.0}, {"offer": None}, True),
        BalanceRow("mrr", {"control": 2.0, "offer": 7.0}, {"offer": None}, True),
    ]


def test_no_covariates_gives_empty_table() -> None:
    assert balance_table({}, "control") == []


# --- bad input -----------------------------------------------------------------------------------


def test_rejects_a_single_arm() -> None:
    with pytest.raises(ValueError, match=r"covariate 'tenure' has 1 arm\(s\) \['control'\]"):
        balance_table({"tenure": {"control": SampleStats(3, 3.0, 5.0)}}, "control")


def test_rejects_an_empty_arm_naming_covariate_and_arm() -> None:
    arms = {"control": SampleStats(3, 3.0, 5.0), "email": SampleStats(0, 0, 0)}
    with pytest.raises(ValueError, match=r"covariate 'tenure', arm 'email' is empty \(n=0\)"):
        balance_table({"tenure": arms}, "control")


def test_rejects_missing_baseline_and_mismatched_arms() -> None:
    s = SampleStats(3, 3.0, 5.0)
    with pytest.raises(ValueError, match=r"covariate 'tenure' has no baseline arm 'ctrl'"):
        balance_table({"tenure": {"control": s, "email": s}}, "ctrl")
    with pytest.raises(ValueError, match=r"covariate 'mrr' has arms \['control', 'sms'\]"):
        balance_table(
            {"tenure": {"control": s, "email": s}, "mrr": {"control": s, "sms": s}}, "control"
        )


@pytest.mark.parametrize("threshold", [0, -0.1, float("nan")])
def test_rejects_bad_threshold(threshold: float) -> None:
    s = SampleStats(3, 3.0, 5.0)
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        balance_table({"x": {"a": s, "b": s}}, "a", threshold=threshold)


def test_negative_unit_count_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="n must be a whole number >= 0"):
        SampleStats(-1, 0, 0)
