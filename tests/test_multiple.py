"""Holm and Benjamini–Hochberg against statsmodels, a published example and a seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from experiments.stats.multiple import Correction, adjust_by_role, adjust_p_values, family_of

SM_METHOD = {"holm": "holm", "bh": "fdr_bh"}

# Benjamini & Hochberg (1995), JRSS B 57, worked example: the 15 p-values of Neuhaus et al. (1992).
# At level 0.05 BH rejects the 4 smallest; Holm (like Bonferroni) rejects only 3.
BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
           0.4262, 0.5719, 0.6528, 0.7590, 1.000]  # fmt: skip


def _random_p_values(rng: np.random.Generator, m: int) -> list[float]:
    p = np.where(rng.random(m) < 0.3, rng.beta(0.3, 8.0, size=m), rng.random(m))
    if m > 3:  # ties, which both procedures must handle
        p[1] = p[0]
    return [float(v) for v in p]


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjustment_equals_statsmodels_on_random_vectors(method: str) -> None:
    rng = np.random.default_rng(2024)
    # few repetitions: statsmodels' holm calls gc.collect() on every call, which is slow
    for m in [1, 2, 3, 6, 10, 25, 60]:
        for _ in range(3):
            p = _random_p_values(rng, m)
            expected = multipletests(p, method=SM_METHOD[method])[1]
            assert adjust_p_values(p, method) == pytest.approx(list(expected), rel=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_none_entries_stay_none_and_are_not_counted(method: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(8):
        p = _random_p_values(rng, 12)
        missing = set(rng.choice(12, size=4, replace=False).tolist())
        with_none = [None if i in missing else v for i, v in enumerate(p)]
        present = [v for v in with_none if v is not None]
        expected = iter(multipletests(present, method=SM_METHOD[method])[1])
        adjusted = adjust_p_values(with_none, method)  # type: ignore[arg-type]
        for i, value in enumerate(adjusted):
            if i in missing:
                assert value is None
            else:
                assert value == pytest.approx(float(next(expected)), rel=1e-12)


def test_published_example_benjamini_hochberg_1995() -> None:
    holm = adjust_p_values(BH_1995, "holm")
    bh = adjust_p_values(BH_1995, "bh")
    assert sum(p is not None and p <= 0.05 for p in holm) == 3
    assert sum(p is not None and p <= 0.05 for p in bh) == 4
    # hand computation: Holm 13 * 0.0019 = 0.0247; BH 15/4 * 0.0095 = 0.035625
    assert holm[2] == pytest.approx(0.0247)
    assert bh[3] == pytest.approx(0.035625)


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjusted_values_are_monotone_capped_and_not_below_raw(method: str) -> None:
    rng = np.random.default_rng(11)
    p = [float(v) for v in rng.random(40)]
    adjusted = adjust_p_values(p, method)  # type: ignore[arg-type]
    pairs = sorted(zip(p, adjusted, strict=True))
    values = [a for _, a in pairs]
    assert all(a is not None for a in values)
    assert values == sorted(values)  # type: ignore[type-var]
    assert all(a is not None and raw <= a <= 1.0 for raw, a in pairs)
    if method == "holm":  # 40 uniform p-values: the largest ones reach the cap
        assert max(values) == 1.0  # type: ignore[type-var]
    else:  # BH leaves the largest p-value as it is (m / m * p_(m))
        assert max(values) == pytest.approx(max(p), rel=1e-15)  # type: ignore[type-var]


def test_none_method_and_edge_cases() -> None:
    assert adjust_p_values([0.01, None, 0.5], "none") == [0.01, None, 0.5]
    assert adjust_p_values([], "holm") == []
    assert adjust_p_values([None, None], "bh") == [None, None]
    assert adjust_p_values([0.03]) == [0.03]  # default method holm; a family of one


@pytest.mark.parametrize(
    ("p_values", "message"),
    [
        ([0.1, 1.2], r"p-value #1 must be between 0 and 1, got 1.2"),
        ([-0.01], r"p-value #0 must be between 0 and 1"),
        ([0.2, float("nan")], r"p-value #1 must be a finite number or None"),
        (["0.1"], r"p-value #0 must be a finite number or None"),
    ],
)
def test_bad_p_values_are_rejected(p_values: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adjust_p_values(p_values)  # type: ignore[arg-type]


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown correction 'bonferroni'"):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]


# --- families ------------------------------------------------------------------------------------


def test_families_of_roles() -> None:
    assert family_of("primary") == family_of("secondary") == "decision"
    assert family_of("guardrail") == "guardrail"
    with pytest.raises(ValueError, match="unknown metric role 'exploratory'"):
        family_of("exploratory")  # type: ignore[arg-type]


def test_adjust_by_role_corrects_decision_and_guardrail_families_separately() -> None:
    p = [0.01, 0.04, 0.02, None, 0.03, 0.001]
    roles = ["primary", "guardrail", "secondary", "secondary", "guardrail", "primary"]
    adjusted = adjust_by_role(p, roles, "holm")  # type: ignore[arg-type]
    decision = adjust_p_values([0.01, 0.02, None, 0.001], "holm")
    guardrail = adjust_p_values([0.04, 0.03], "holm")
    assert adjusted == [decision[0], guardrail[0], decision[1], None, guardrail[1], decision[3]]
    # hand computation: decision family of 3 -> 0.001*3, 0.01*2, 0.02*1 (monotone); guardrails of 2
    assert adjusted == pytest.approx([0.02, 0.06, 0.02, None, 0.06, 0.003])


def test_adjust_by_role_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="3 p-values but 2 roles"):
        adjust_by_role([0.1, 0.2, 0.3], ["primary", "secondary"])


# --- simulation ----------------------------------------------------------------------------------


def _null_family_p_values(rng: np.random.Generator, families: int, size: int = 6) -> np.ndarray:
    """p-values of Welch t-tests on null normal data: ``families`` x ``size`` independent tests."""
    n = 30
    treatment = rng.normal(0.0, 1.0, size=(families, size, n))
    baseline = rng.normal(0.0, 2.0, size=(families, size, n))
    return np.asarray(sps.ttest_ind(treatment, baseline, axis=-1, equal_var=False).pvalue)


def _family_wise_error(p: np.ndarray, method: Correction, alpha: float) -> float:
    """Share of families (rows) where any adjusted p-value is <= alpha."""
    hits = 0
    for row in p:
        adjusted = adjust_p_values(row.tolist(), method)
        hits += any(a is not None and a <= alpha for a in adjusted)
    return hits / len(p)


@pytest.mark.slow
def test_simulated_family_wise_error_of_six_null_comparisons() -> None:
    rng = np.random.default_rng(20260101)
    families = 200_000
    p = np.concatenate([_null_family_p_values(rng, 10_000) for _ in range(families // 10_000)])
    alpha = 0.05
    raw_fwer = float(np.mean((p <= alpha).any(axis=1)))
    holm_fwer = _family_wise_error(p, "holm", alpha)
    bh_fwer = _family_wise_error(p, "bh", alpha)

    def se(rate: float) -> float:
        return (rate * (1 - rate) / families) ** 0.5

    # closed forms for 6 independent null tests at 0.05 (the Welch t-test is near exact here):
    raw_expected = 1 - 0.95**6  # 0.2649
    holm_expected = 1 - (1 - alpha / 6) ** 6  # 0.0490: Holm rejects anything iff min p <= alpha/6
    bh_expected = alpha  # BH under the global null: FWER = FDR = m0/m * alpha = 0.05
    print(f"FWER uncorrected={raw_fwer:.4f} holm={holm_fwer:.4f} bh={bh_fwer:.4f} (n={families})")
    assert raw_fwer == pytest.approx(raw_expected, abs=4 * se(raw_expected))
    assert holm_fwer == pytest.approx(holm_expected, abs=4 * se(holm_expected))
    assert holm_fwer <= alpha + 3 * se(alpha)
    assert bh_fwer == pytest.approx(bh_expected, abs=4 * se(bh_expected))
