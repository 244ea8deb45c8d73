"""Frequentist tests over sufficient statistics (v1), in the manner of GrowthBook's ``gbstats``.

Every function here is pure: it takes per-arm aggregates (``n``, ``sum``, ``sum_squares``, computed
in SQL) and returns a frozen result. Nothing reads a database, and no NaN or infinity ever leaves
this module: a case where a number is undefined is reported by an explicit ``status`` with the
number set to ``None``.

Statuses, in order of precedence (the first that applies wins):

- ``"n_too_small"``: fewer than 2 units in either arm; every number is ``None``.
- ``"zero_variance"``: both arms have zero variance (e.g. no conversions anywhere, or every unit
  converted); the absolute lift (and the relative lift if the baseline mean is positive) is given,
  the confidence intervals, statistic and p-value are ``None``.
- ``"out_of_range"``: the values are so large that the difference, its standard error or the test
  statistic overflows float64; what could not be computed is ``None``.
- ``"zero_baseline"`` / ``"negative_baseline"``: the baseline mean is 0 / negative, so the relative
  lift is undefined (a ratio to a negative mean has the wrong sign: +5 on -10 is not "-50%");
  ``rel_lift`` and ``rel_ci`` are ``None`` while the absolute lift, its CI and the p-value are
  computed.
- ``"rel_ci_undefined"``: the relative lift is given but the delta-method variance of it is 0 (e.g.
  no conversions at all in the treatment arm), so ``rel_ci`` is ``None``; the rest is computed.
- ``"ok"``: every number is computed.

Relative lift (delta method). With treatment mean ``m_t`` and baseline mean ``m_b`` the relative
lift is ``r = m_t / m_b - 1``. A first-order Taylor expansion of the ratio of two independent means
gives::

    Var(r) ≈ v_t / (n_t * m_b**2) + m_t**2 * v_b / (n_b * m_b**4)

where ``v`` is the per-unit variance of each arm (the Bernoulli ``p(1 - p)`` for binary metrics,
the sample variance for continuous ones). The CI is ``r ± q * sqrt(Var(r))`` with the same quantile
``q`` as the absolute CI (normal for the z-test, Student t with the Welch–Satterthwaite df for the
t-test). Reference: Deng, Knoblich & Lu (2018), "Applying the Delta Method in Metric Analytics",
KDD; GrowthBook ``gbstats`` ``frequentist`` tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats as sps

from experiments.metrics import MetricKind

ComparisonStatus = Literal[
    "ok",
    "n_too_small",
    "zero_variance",
    "out_of_range",
    "zero_baseline",
    "negative_baseline",
    "rel_ci_undefined",
]


@dataclass(frozen=True)
class SampleStats:
    """Sufficient statistics of one arm for one metric: count, sum and sum of squares.

    ``sum`` is the plain sum of the values; ``sum_squares`` is the sum of squared deviations from
    ``shift``, ``sum((x - shift)**2)`` (with the default ``shift = 0`` the plain sum of squares).
    A shift near the arm's mean keeps the variance exact when the values are large and their
    spread small (values around 1e9 differing by 0 or 1 lose all spread in ``sum(x**2)``).
    """

    n: int
    sum: float
    sum_squares: float
    shift: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"SampleStats.n must be a whole number >= 0, got {self.n!r}")
        for field in ("sum", "sum_squares", "shift"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"SampleStats.{field} must be a finite number, got {value!r}")
        if self.sum_squares < 0:
            raise ValueError(
                f"SampleStats.sum_squares must be >= 0 (it is a sum of squares), "
                f"got {self.sum_squares!r}"
            )
        if self.n == 0 and (self.sum != 0 or self.sum_squares != 0):
            raise ValueError(
                f"SampleStats with n=0 must have sum=0 and sum_squares=0, "
                f"got sum={self.sum!r}, sum_squares={self.sum_squares!r}"
            )

    @property
    def mean(self) -> float:
        """``sum / n``; 0.0 for an empty arm (n = 0), so that no NaN appears."""
        return self.sum / self.n if self.n > 0 else 0.0

    def plus(self, other: SampleStats) -> SampleStats:
        """Both samples together, around this one's shift (the other's squares re-centred with
        ``sum((x - s)**2) = sum((x - t)**2) + 2 (t - s) (sum - n t) + n (t - s)**2``); an empty
        sample takes the other's shift."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        d = other.shift - self.shift
        moved = other.sum_squares + 2 * d * (other.sum - other.n * other.shift) + other.n * d * d
        return SampleStats(
            self.n + other.n, self.sum + other.sum, self.sum_squares + max(moved, 0.0), self.shift
        )

    @property
    def centered_sum_squares(self) -> float:
        """``sum((x - mean)**2) = sum_squares - n * (mean - shift)**2``, clamped at 0 (rounding can
        take the one-pass form slightly below); 0.0 when n = 0."""
        if self.n == 0:
            return 0.0
        offset = self.mean - self.shift
        return max(self.sum_squares - self.n * (offset * offset), 0.0)

    @property
    def variance(self) -> float:
        """Sample variance ``sum((x - mean)**2) / (n - 1)``; 0.0 when n < 2."""
        if self.n < 2:
            return 0.0
        return self.centered_sum_squares / (self.n - 1)


@dataclass(frozen=True)
class ComparisonResult:
    """Treatment versus baseline for one metric. See the module docstring for the statuses."""

    method: str
    abs_lift: float | None
    abs_ci: tuple[float, float] | None
    rel_lift: float | None
    rel_ci: tuple[float, float] | None
    p_value: float | None
    status: ComparisonStatus
    statistic: float | None
    df: float | None


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check: chi-square goodness of fit of arm counts to weights."""

    chi2: float
    df: int
    p_value: float
    ok: bool
    expected: tuple[float, ...]


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _interval(centre: float, half_width: float) -> tuple[float, float] | None:
    lo, hi = centre - half_width, centre + half_width
    return (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None


def relative_variance(
    m_t: float, v_t: float, n_t: int, m_b: float, v_b: float, n_b: int
) -> float | None:
    """Delta-method ``Var(m_t / m_b - 1) = (v_t/n_t + q**2 v_b/n_b) / m_b**2`` with ``q = m_t/m_b``
    (the module docstring's formula, rearranged so that no power overflows); None unless the
    baseline mean is positive and the variance a positive finite number."""
    if not m_b > 0:
        return None
    q = m_t / m_b
    var = ((v_t / n_t) / m_b) / m_b + ((q * q) * (v_b / n_b) / m_b) / m_b
    return var if 0 < var < math.inf else None


def _relative(
    m_t: float, v_t: float, n_t: int, m_b: float, v_b: float, n_b: int, quantile: float
) -> tuple[float | None, tuple[float, float] | None]:
    """Relative lift and its delta-method CI; both None unless the baseline mean is positive."""
    if not m_b > 0:
        return None, None
    rel = _finite(m_t / m_b - 1)
    var = relative_variance(m_t, v_t, n_t, m_b, v_b, n_b)
    if rel is None or var is None:
        return rel, None
    return rel, _interval(rel, quantile * math.sqrt(var))


def relative_status(
    m_b: float, rel_ci: tuple[float, float] | None, computed: bool = True
) -> ComparisonStatus:
    """The status of a comparison whose variance is not zero: ``out_of_range`` unless the
    absolute numbers were all ``computed``, then the baseline's sign, then the relative CI."""
    if not computed:
        return "out_of_range"
    if m_b == 0:
        return "zero_baseline"
    if m_b < 0:
        return "negative_baseline"
    return "ok" if rel_ci is not None else "rel_ci_undefined"


def _degenerate(
    method: str, treatment: SampleStats, baseline: SampleStats, v_t: float, v_b: float
) -> ComparisonResult | None:
    """The result for the n_too_small and zero_variance cases, or None when neither applies."""
    if treatment.n < 2 or baseline.n < 2:
        return ComparisonResult(method, None, None, None, None, None, "n_too_small", None, None)
    if v_t == 0 and v_b == 0:
        abs_lift = _finite(treatment.mean - baseline.mean)
        rel = _finite(treatment.mean / baseline.mean - 1) if baseline.mean > 0 else None
        return ComparisonResult(
            method, abs_lift, None, rel, None, None, "zero_variance", None, None
        )
    return None


def _check_binary(arm: str, s: SampleStats) -> None:
    if not 0 <= s.sum <= s.n:
        raise ValueError(
            f"binary metric, {arm} arm: sum (number of successes) must be between 0 and "
            f"n={s.n}, got {s.sum!r}"
        )


def two_proportion_ztest(
    treatment: SampleStats, baseline: SampleStats, alpha: float = 0.05
) -> ComparisonResult:
    """Two-sided two-proportion z-test for a binary metric (``sum`` = number of successes).

    - p-value from the pooled test: ``p = (x_t + x_b) / (n_t + n_b)``,
      ``z = (p_t - p_b) / sqrt(p (1 - p) (1/n_t + 1/n_b))``, ``p_value = 2 * (1 - Phi(|z|))``
      (as ``statsmodels.stats.proportion.proportions_ztest``).
    - CI for ``p_t - p_b`` is the unpooled Wald interval
      ``(p_t - p_b) ± z_{1-alpha/2} sqrt(p_t (1 - p_t)/n_t + p_b (1 - p_b)/n_b)``
      (as ``confint_proportions_2indep(method="wald")``).
    - Relative CI by the delta method with Bernoulli variances ``p (1 - p)``.

    Degenerate cases: n < 2 in an arm -> ``"n_too_small"``; ``p_t`` and ``p_b`` both 0 or 1
    -> ``"zero_variance"``; ``p_b = 0`` -> ``"zero_baseline"``. A sum outside ``[0, n]`` is a
    ValueError.
    """
    _check_alpha(alpha)
    _check_binary("treatment", treatment)
    _check_binary("baseline", baseline)
    method = "two_proportion_z"
    p_t, p_b = treatment.mean, baseline.mean
    v_t, v_b = p_t * (1 - p_t), p_b * (1 - p_b)
    degenerate = _degenerate(method, treatment, baseline, v_t, v_b)
    if degenerate is not None:
        return degenerate
    n_t, n_b = treatment.n, baseline.n
    diff = p_t - p_b
    pooled = (treatment.sum + baseline.sum) / (n_t + n_b)
    # pooled is strictly inside (0, 1) here: both arms at 0 or both at 1 was caught as
    # zero_variance, and one arm at 0 with the other at 1 still mixes successes and failures.
    z = diff / math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_b))
    p_value = float(2 * sps.norm.sf(abs(z)))
    quantile = float(sps.norm.ppf(1 - alpha / 2))
    abs_ci = _interval(diff, quantile * math.sqrt(v_t / n_t + v_b / n_b))
    rel, rel_ci = _relative(p_t, v_t, n_t, p_b, v_b, n_b, quantile)
    status = relative_status(p_b, rel_ci, abs_ci is not None)
    return ComparisonResult(method, diff, abs_ci, rel, rel_ci, p_value, status, _finite(z), None)


def welch_ttest(
    treatment: SampleStats, baseline: SampleStats, alpha: float = 0.05
) -> ComparisonResult:
    """Two-sided Welch t-test for a continuous metric (unequal variances).

    ``se = sqrt(v_t/n_t + v_b/n_b)`` with sample variances ``v``; ``t = (m_t - m_b) / se``;
    Welch–Satterthwaite ``df = se**4 / ((v_t/n_t)**2/(n_t-1) + (v_b/n_b)**2/(n_b-1))``;
    ``p_value = 2 * (1 - F_t(|t|; df))``; CI ``(m_t - m_b) ± t_{1-alpha/2, df} * se``
    (as ``scipy.stats.ttest_ind(equal_var=False)`` and statsmodels
    ``CompareMeans.tconfint_diff(usevar="unequal")``). Relative CI by the delta method with the
    same t quantile.

    Degenerate cases: n < 2 in an arm -> ``"n_too_small"``; both sample variances 0
    -> ``"zero_variance"``; baseline mean 0 or negative -> ``"zero_baseline"`` /
    ``"negative_baseline"``; see the module docstring for the rest. Never raises on valid
    ``SampleStats``: sums near the float64 limit give ``"out_of_range"``, not an exception.
    """
    _check_alpha(alpha)
    method = "welch_t"
    v_t, v_b = treatment.variance, baseline.variance
    degenerate = _degenerate(method, treatment, baseline, v_t, v_b)
    if degenerate is not None:
        return degenerate
    n_t, n_b = treatment.n, baseline.n
    m_t, m_b = treatment.mean, baseline.mean
    diff = m_t - m_b
    a, b = v_t / n_t, v_b / n_b
    total = a + b
    if total == 0:  # both variances underflowed when divided by n
        return ComparisonResult(
            method, _finite(diff), None, None, None, None, "zero_variance", None, None
        )
    if not (math.isfinite(diff) and math.isfinite(total)):
        return ComparisonResult(
            method, _finite(diff), None, None, None, None, "out_of_range", None, None
        )
    se = math.sqrt(total)
    # Welch–Satterthwaite df as 1 / sum(share**2 / (n - 1)): the shares of the variance are in
    # [0, 1], so nothing overflows however large the sums are.
    share_t, share_b = a / total, b / total
    df = 1.0 / (share_t * share_t / (n_t - 1) + share_b * share_b / (n_b - 1))
    t = diff / se
    p_value = _finite(float(2 * sps.t.sf(abs(t), df))) if math.isfinite(t) else None
    quantile = float(sps.t.ppf(1 - alpha / 2, df))
    abs_ci = _interval(diff, quantile * se)
    rel, rel_ci = _relative(m_t, v_t, n_t, m_b, v_b, n_b, quantile)
    computed = abs_ci is not None and p_value is not None and math.isfinite(t)
    return ComparisonResult(
        method,
        _finite(diff),
        abs_ci,
        rel,
        rel_ci,
        p_value,
        relative_status(m_b, rel_ci, computed),
        _finite(t),
        _finite(df),
    )


def compare(
    kind: MetricKind, treatment: SampleStats, baseline: SampleStats, alpha: float = 0.05
) -> ComparisonResult:
    """The v1 test for a metric kind: two-proportion z (``binary``) or Welch t (``continuous``)."""
    if kind == "binary":
        return two_proportion_ztest(treatment, baseline, alpha)
    if kind == "continuous":
        return welch_ttest(treatment, baseline, alpha)
    raise ValueError(f"unknown metric kind {kind!r}; expected 'binary' or 'continuous'")


def srm_test(
    counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001
) -> SrmResult:
    """Sample-ratio-mismatch check: Pearson chi-square goodness of fit, ``df = k - 1``.

    ``expected_i = N * w_i / sum(w)``, ``chi2 = sum((o_i - e_i)**2 / e_i)``, ``p = 1 - F(chi2)``
    (as ``scipy.stats.chisquare``). ``ok`` is ``p >= threshold``; 0.001 is the customary
    threshold because the check runs on every report. Degenerate case: no units at all (N = 0)
    gives ``chi2 = 0``, ``p = 1``, ``ok = True`` (nothing to mismatch yet). Fewer than two arms,
    mismatched lengths, negative counts or non-positive weights are ValueErrors.
    """
    if len(counts) != len(weights):
        raise ValueError(
            f"srm_test: {len(counts)} counts but {len(weights)} weights; give one weight per arm"
        )
    if len(counts) < 2:
        raise ValueError(f"srm_test needs at least 2 arms, got {len(counts)}")
    if not 0 < threshold < 1:
        raise ValueError(f"srm_test threshold must be strictly between 0 and 1, got {threshold!r}")
    for i, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"srm_test: count #{i} must be a whole number >= 0, got {c!r}")
    for i, w in enumerate(weights):
        if not (isinstance(w, int | float) and math.isfinite(w) and w > 0):
            raise ValueError(f"srm_test: weight #{i} must be a finite number > 0, got {w!r}")
    total, weight_sum = sum(counts), float(sum(weights))
    expected = tuple(total * w / weight_sum for w in weights)
    df = len(counts) - 1
    if total == 0:
        return SrmResult(0.0, df, 1.0, True, expected)
    chi2 = float(sum((o - e) * (o - e) / e for o, e in zip(counts, expected, strict=True)))
    p_value = float(sps.chi2.sf(chi2, df))
    return SrmResult(chi2, df, p_value, p_value >= threshold, expected)
