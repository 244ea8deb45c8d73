"""Always-valid sequential inference for experiments that are looked at every day.

A fixed-horizon test (``stats.compare``) is valid only if it is read once, at a sample size fixed in
advance. A scheduled experiment is looked at after every daily run, and stopping at the first look
with ``p < alpha`` inflates the false-positive rate far above ``alpha``. The confidence sequence
here holds at every look simultaneously: with probability at least ``1 - alpha`` it covers the true
difference at *all* sample sizes, so the experimenter may look as often as they like and stop
whenever they like.

Method: the asymptotic Gaussian-mixture confidence sequence of Howard, Ramdas, McAuliffe & Sekhon
(2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics
49(2) (normal mixture boundary, eq. (14), and the choice of the mixing parameter in section 3.5), in
the two-sample, asymptotic form of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2023), "Time-uniform
central limit theory and asymptotic confidence sequences" (arXiv:2103.06476), exactly as GrowthBook's
``gbstats`` ``SequentialTwoSidedTTest`` computes it (``sequential_rho`` and
``sequential_interval_halfwidth``).

With per-unit variances ``v_t``, ``v_b`` (Bernoulli ``p (1 - p)`` for binary metrics, the sample
variance for continuous ones), ``V = v_t / n_t + v_b / n_b`` the estimated variance of the
difference in means and ``n = n_t + n_b``::

    rho        = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / N_tune),   N_tune = 2 * tuning_n
    half_width = sqrt(V n) * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha))
    abs_ci     = (m_t - m_b) ± half_width

``tuning_n`` is the sample size *per arm* at which the sequence is tightest: the ``rho`` above is
Howard et al.'s near-optimal mixing parameter for the moment the total sample ``n`` reaches
``N_tune``, which is ``2 * tuning_n`` with equal arms. (gbstats' ``sequential_tuning_parameter`` is
in units of the total ``n``, so gbstats' setting ``T`` is ``tuning_n = T / 2`` here.) A poor guess of
``tuning_n`` costs width, never validity.

Relative lift: the delta-method variance of ``r = m_t / m_b - 1`` (module docstring of
``experiments.stats``) is plugged into the same boundary in place of ``V``, as gbstats does for its
relative sequential intervals. It inherits the delta method's first-order approximation.

Always-valid p-value: the smallest ``alpha'`` at which the sequence (with ``rho`` held at the value
fixed by the settings) excludes 0. Solving ``|d| = half_width(alpha')`` gives the closed form::

    p = min(1, sqrt(n rho^2 + 1) * exp(-rho^2 n d^2 / (2 V (n rho^2 + 1))))

which is ``1 / e-value`` of the Gaussian-mixture e-process (Waudby-Smith et al., eq. (155); gbstats'
two-sided sequential p-value). So ``p < alpha`` exactly when ``abs_ci`` excludes 0, and by Ville's
inequality ``P(p ever <= alpha) <= alpha`` under the null. Because ``rho`` depends on the settings'
``alpha``, the p-value is reported for the configured ``alpha``.

Statuses as in ``experiments.stats``: ``"n_too_small"`` (fewer than 2 units in an arm; every number
``None``), ``"zero_variance"`` (both per-unit variances 0; lifts given, intervals and p-value
``None``), ``"out_of_range"``, ``"zero_baseline"`` / ``"negative_baseline"`` (baseline mean 0 or
negative; relative lift and its interval ``None``), ``"rel_ci_undefined"``, ``"ok"`` (every number
computed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.metrics import MetricKind
from experiments.stats.frequentist import (
    ComparisonStatus,
    SampleStats,
    _check_alpha,
    _check_binary,
    _finite,
    _interval,
    relative_status,
    relative_variance,
)

METHOD = "gaussian_mixture_cs"


@dataclass(frozen=True)
class SequentialSettings:
    """Settings of the always-valid test.

    ``tuning_n``: the sample size per arm at which the confidence sequence is tightest (a guess of
    the final size per arm; a wrong guess widens the intervals but keeps them valid).
    ``alpha``: the error rate over *all* looks together.
    """

    tuning_n: int = 5_000
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.tuning_n, bool) or not isinstance(self.tuning_n, int):
            raise ValueError(
                f"SequentialSettings.tuning_n must be a whole number of units per arm, "
                f"got {self.tuning_n!r}"
            )
        if self.tuning_n < 1:
            raise ValueError(f"SequentialSettings.tuning_n must be >= 1, got {self.tuning_n!r}")
        try:
            _check_alpha(self.alpha)
        except ValueError as exc:
            raise ValueError(f"SequentialSettings.alpha: {exc}") from None


@dataclass(frozen=True)
class SequentialResult:
    """Treatment versus baseline under continuous monitoring. See the module docstring.

    ``abs_ci`` and ``rel_ci`` are the confidence sequences at this look; ``p_value`` is the
    always-valid p-value for "no difference in means".
    """

    method: str
    abs_lift: float | None
    abs_ci: tuple[float, float] | None
    rel_lift: float | None
    rel_ci: tuple[float, float] | None
    p_value: float | None
    status: ComparisonStatus


def mixing_parameter(settings: SequentialSettings) -> float:
    """``rho = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / (2 * tuning_n))``.

    Howard et al. (2021), section 3.5: the normal-mixture parameter that makes the boundary
    (nearly) tightest at total sample ``2 * tuning_n``; gbstats ``sequential_rho``.
    """
    a = -2 * math.log(settings.alpha)
    return math.sqrt((a + math.log(a + 1)) / (2 * settings.tuning_n))


def half_width(variance: float, n: int, alpha: float, rho: float) -> float:
    """Half-width of the Gaussian-mixture confidence sequence at total sample ``n``.

    ``sqrt(variance n) * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha))``,
    where ``variance`` is the estimated variance of the estimate (``V`` in the module docstring).
    """
    t = n * rho * rho
    return math.sqrt(variance * n) * math.sqrt(
        2 * (t + 1) / (n * n * rho * rho) * math.log(math.sqrt(t + 1) / alpha)
    )


def always_valid_p_value(diff: float, variance: float, n: int, rho: float) -> float:
    """``min(1, sqrt(n rho^2 + 1) exp(-rho^2 n diff^2 / (2 variance (n rho^2 + 1))))``.

    The ``alpha`` at which ``half_width`` equals ``|diff|`` (computed in logs so that it
    underflows to 0.0 rather than overflowing).
    """
    t = n * rho * rho
    log_p = 0.5 * math.log1p(t) - rho * rho * n * diff * diff / (2 * variance * (t + 1))
    return math.exp(min(log_p, 0.0))


def _variances(
    kind: MetricKind, treatment: SampleStats, baseline: SampleStats
) -> tuple[float, float]:
    if kind == "binary":
        _check_binary("treatment", treatment)
        _check_binary("baseline", baseline)
        return (
            treatment.mean * (1 - treatment.mean),
            baseline.mean * (1 - baseline.mean),
        )
    if kind == "continuous":
        return treatment.variance, baseline.variance
    raise ValueError(f"unknown metric kind {kind!r}; expected 'binary' or 'continuous'")


def sequential_test(
    kind: MetricKind,
    treatment: SampleStats,
    baseline: SampleStats,
    settings: SequentialSettings = SequentialSettings(),
) -> SequentialResult:
    """Always-valid confidence sequence and p-value for ``mean(treatment) - mean(baseline)``.

    Gaussian-mixture confidence sequence (Howard et al. 2021; Waudby-Smith et al. 2023; gbstats
    ``SequentialTwoSidedTTest``), formulas in the module docstring. Valid at every look, however
    often the experiment is analysed.

    Degenerate cases: n < 2 in an arm -> ``"n_too_small"``; both per-unit variances 0 ->
    ``"zero_variance"``; baseline mean 0 -> ``"zero_baseline"``. An unknown ``kind`` or (binary)
    a sum outside ``[0, n]`` is a ValueError.
    """
    v_t, v_b = _variances(kind, treatment, baseline)
    if treatment.n < 2 or baseline.n < 2:
        return SequentialResult(METHOD, None, None, None, None, None, "n_too_small")
    m_t, m_b = treatment.mean, baseline.mean
    diff = _finite(m_t - m_b)
    rel = _finite(m_t / m_b - 1) if m_b > 0 else None
    if v_t == 0 and v_b == 0:
        return SequentialResult(METHOD, diff, None, rel, None, None, "zero_variance")
    n_t, n_b = treatment.n, baseline.n
    n = n_t + n_b
    rho = mixing_parameter(settings)
    variance = v_t / n_t + v_b / n_b
    abs_ci, p_value = None, None
    # variance can still underflow to 0 or overflow for extreme inputs; then nothing is reported.
    if diff is not None and 0 < variance < math.inf:
        abs_ci = _interval(diff, half_width(variance, n, settings.alpha, rho))
        p_value = _finite(always_valid_p_value(diff, variance, n, rho))
    rel_ci = None
    rel_var = relative_variance(m_t, v_t, n_t, m_b, v_b, n_b)
    if rel is not None and rel_var is not None:
        rel_ci = _interval(rel, half_width(rel_var, n, settings.alpha, rho))
    computed = abs_ci is not None and p_value is not None
    return SequentialResult(
        METHOD, diff, abs_ci, rel, rel_ci, p_value, relative_status(m_b, rel_ci, computed)
    )
