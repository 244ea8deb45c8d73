"""Fixed-horizon extensions of the v1 tests: Fisher's exact test and omnibus tests over k arms.

Like :mod:`experiments.stats`, every function here is pure and works on per-arm sufficient
statistics (:class:`~experiments.stats.SampleStats`; for a binary metric ``sum`` is the number of
successes). No NaN or infinity leaves this module: an undefined number is ``None``, and the
omnibus test says why in its ``status``.

- :func:`needs_exact` tells when the large-sample z-test of a 2x2 table is doubtful (an expected
  cell count below 5, Cochran's rule), so that :func:`fisher_exact_test` should be reported.
- :func:`omnibus_test` asks "do the k arms differ at all?" before the pairwise comparisons are
  read: Pearson's chi-square test of independence for binary metrics, Welch's heteroscedastic
  ANOVA for continuous ones.

Bad input (fewer than two arms, an empty arm, successes below 0, above ``n`` or fractional)
raises ValueError naming the arm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scipy import stats as sps

from experiments.stats.frequentist import SampleStats

OmnibusStatus = Literal["ok", "n_too_small", "zero_variance", "out_of_range"]


@dataclass(frozen=True)
class FisherResult:
    """Fisher's exact test of a 2x2 table (treatment/baseline x success/failure).

    ``odds_ratio`` is the sample odds ratio ``(x_t * f_b) / (f_t * x_b)`` (successes ``x``,
    failures ``f``), treatment over baseline; ``None`` when it is 0/0 or infinite.
    """

    p_value: float
    odds_ratio: float | None
    method: str = "fisher_exact"


@dataclass(frozen=True)
class OmnibusResult:
    """An omnibus test over k >= 2 arms; ``statistic`` and ``p_value`` are None unless ``"ok"``.

    ``df`` is the numerator degrees of freedom ``k - 1`` (the chi-square df for binary metrics);
    ``df_denominator`` is Welch's fractional denominator df for continuous metrics (None for the
    chi-square test, and whenever the statistic is undefined).
    """

    statistic: float | None
    df: int
    p_value: float | None
    method: str
    status: OmnibusStatus
    df_denominator: float | None = None


def _check_binary_arm(arm: str, s: SampleStats) -> None:
    if s.n == 0:
        raise ValueError(f"binary metric: arm {arm!r} is empty (n=0); it has no units")
    if not (0 <= s.sum <= s.n and float(s.sum).is_integer()):
        raise ValueError(
            f"binary metric, arm {arm!r}: sum (number of successes) must be a whole number "
            f"between 0 and n={s.n}, got {s.sum!r}"
        )


def _table_2x2(treatment: SampleStats, baseline: SampleStats) -> list[list[int]]:
    _check_binary_arm("treatment", treatment)
    _check_binary_arm("baseline", baseline)
    x_t, x_b = int(treatment.sum), int(baseline.sum)
    return [[x_t, treatment.n - x_t], [x_b, baseline.n - x_b]]


def needs_exact(treatment: SampleStats, baseline: SampleStats, min_expected: float = 5.0) -> bool:
    """Whether any expected cell count of the 2x2 table is below ``min_expected``.

    Expected count of cell (i, j) under independence: ``row_i * col_j / N`` (Cochran 1954: the
    chi-square / z approximation is doubtful when an expected count is below 5). A table with no
    successes or no failures at all has expected counts of 0 and so needs the exact test.
    """
    if not (isinstance(min_expected, int | float) and math.isfinite(min_expected)):
        raise ValueError(f"needs_exact: min_expected must be a finite number, got {min_expected!r}")
    table = _table_2x2(treatment, baseline)
    rows = [sum(row) for row in table]
    cols = [table[0][j] + table[1][j] for j in range(2)]
    total = sum(rows)
    return any(r * c / total < min_expected for r in rows for c in cols)


def fisher_exact_test(treatment: SampleStats, baseline: SampleStats) -> FisherResult:
    """Two-sided Fisher exact test on ``[[x_t, n_t - x_t], [x_b, n_b - x_b]]``.

    The p-value sums the hypergeometric probabilities (margins fixed) of all tables no more
    likely than the observed one (Fisher 1935; as ``scipy.stats.fisher_exact``, which computes
    it). It is always defined: a table with an empty margin (no successes or no failures
    anywhere) has p = 1. The sample odds ratio is None when undefined (0/0) or infinite.
    """
    table = _table_2x2(treatment, baseline)
    result = sps.fisher_exact(table, alternative="two-sided")
    odds = float(result.statistic)
    return FisherResult(
        p_value=min(float(result.pvalue), 1.0),
        odds_ratio=odds if math.isfinite(odds) else None,
    )


def _check_arms(arms: Mapping[str, SampleStats]) -> None:
    if len(arms) < 2:
        raise ValueError(
            f"omnibus_test needs at least 2 arms, got {len(arms)}: {sorted(arms) or 'none'}"
        )
    for name, s in arms.items():
        if not isinstance(s, SampleStats):
            raise ValueError(f"omnibus_test: arm {name!r} must be SampleStats, got {s!r}")
        if s.n == 0:
            raise ValueError(f"omnibus_test: arm {name!r} is empty (n=0); it has no units")


def _chi_square(arms: Mapping[str, SampleStats]) -> OmnibusResult:
    """Pearson chi-square test of independence on the k x 2 (arm x success/failure) table."""
    method, df = "chi_square_independence", len(arms) - 1
    for name, s in arms.items():
        _check_binary_arm(name, s)
    successes = sum(s.sum for s in arms.values())
    total = sum(s.n for s in arms.values())
    if successes == 0 or successes == total:
        return OmnibusResult(None, df, None, method, "zero_variance")
    rate = successes / total
    chi2 = 0.0
    for s in arms.values():
        for observed, expected in ((s.sum, s.n * rate), (s.n - s.sum, s.n * (1 - rate))):
            chi2 += (observed - expected) * (observed - expected) / expected
    return OmnibusResult(chi2, df, float(sps.chi2.sf(chi2, df)), method, "ok")


def _welch_anova(arms: Mapping[str, SampleStats]) -> OmnibusResult:
    """Welch's (1951) heteroscedastic one-way ANOVA from per-arm n, mean and variance."""
    method, k = "welch_anova", len(arms)
    df1 = k - 1
    stats = list(arms.values())
    if any(s.n < 2 for s in stats):
        return OmnibusResult(None, df1, None, method, "n_too_small")
    if any(s.variance == 0 for s in stats):
        return OmnibusResult(None, df1, None, method, "zero_variance")
    weights = [s.n / s.variance for s in stats]
    w_total = sum(weights)
    grand = sum(w * s.mean for w, s in zip(weights, stats, strict=True)) / w_total
    # products, not **: a float ** raises OverflowError where a product gives inf (checked below)
    between = (
        sum(w * (s.mean - grand) * (s.mean - grand) for w, s in zip(weights, stats, strict=True))
        / df1
    )
    lam = sum(
        (1 - w / w_total) * (1 - w / w_total) / (s.n - 1)
        for w, s in zip(weights, stats, strict=True)
    )
    f_stat = between / (1 + 2 * (k - 2) / (k * k - 1) * lam)
    if not (math.isfinite(f_stat) and math.isfinite(lam)) or lam <= 0:
        return OmnibusResult(None, df1, None, method, "out_of_range")
    df2 = (k * k - 1) / (3 * lam)
    p_value = float(sps.f.sf(f_stat, df1, df2))
    if not (math.isfinite(df2) and math.isfinite(p_value)):
        return OmnibusResult(None, df1, None, method, "out_of_range")
    return OmnibusResult(f_stat, df1, p_value, method, "ok", df2)


def omnibus_test(
    kind: Literal["binary", "continuous"], arms: Mapping[str, SampleStats]
) -> OmnibusResult:
    """Do the k >= 2 arms differ at all? One test over every arm (arm name -> stats).

    - ``binary``: Pearson chi-square test of independence on the k x 2 table of successes and
      failures, no continuity correction: ``E = n_i * p`` and ``n_i * (1 - p)`` with the pooled
      rate ``p``, ``chi2 = sum((O - E)**2 / E)``, ``df = k - 1`` (as
      ``scipy.stats.chi2_contingency(correction=False)``). Degenerate: no successes or no
      failures in any arm -> ``"zero_variance"`` (every expected count of a column is 0).
    - ``continuous``: Welch's ANOVA (Welch 1951, "On the comparison of several mean values: an
      alternative approach", Biometrika 38): weights ``w_i = n_i / s_i**2``, weighted mean
      ``m_w = sum(w_i m_i) / W``, ``lam = sum((1 - w_i/W)**2 / (n_i - 1))``,
      ``F = [sum(w_i (m_i - m_w)**2) / (k - 1)] / [1 + 2 (k - 2) lam / (k**2 - 1)]`` on
      ``(k - 1, (k**2 - 1) / (3 lam))`` df (as statsmodels ``anova_oneway(use_var="unequal")``).
      Chosen over the classic one-way ANOVA F because it does not assume equal variances (arms
      with a pricing offer change the spread of revenue, not just its mean) and it reduces to
      the v1 Welch t-test for k = 2 (``F = t**2``, same df and p-value). Degenerate: an arm with
      n < 2 -> ``"n_too_small"``; an arm with zero sample variance -> ``"zero_variance"`` (its
      weight ``n / s**2`` is infinite).

    Fewer than two arms, an empty arm, or (binary) successes outside ``[0, n]`` raise
    ValueError naming the arm.
    """
    _check_arms(arms)
    if kind == "binary":
        return _chi_square(arms)
    if kind == "continuous":
        return _welch_anova(arms)
    raise ValueError(f"unknown metric kind {kind!r}; expected 'binary' or 'continuous'")
