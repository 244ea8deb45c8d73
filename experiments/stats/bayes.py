"""Bayesian comparison of two arms over sufficient statistics (chance to beat, expected loss).

Pure functions in the manner of GrowthBook's ``gbstats`` Bayesian engine: per-arm ``SampleStats``
in, a frozen :class:`BayesResult` out, never NaN or infinity (an undefined number is ``None`` with
an explicit ``status``).

Quantities, with ``T`` the treatment mean and ``B`` the baseline mean under their posteriors:

- ``abs_lift_mean``: ``E[T - B]``.
- ``credible_interval``: equal-tailed ``1 - alpha`` interval of ``T - B``.
- ``chance_to_beat``: ``P(T > B)``.
- ``risk``: expected loss of choosing the treatment, ``E[max(B - T, 0)]``.
- ``risk_baseline``: expected loss of keeping the baseline, ``E[max(T - B, 0)]``.
  Always ``risk_baseline - risk = abs_lift_mean``.

Binary metrics (:func:`bayes_binary`): conjugate Beta–binomial, each arm's posterior is
``Beta(alpha + x, beta + n - x)`` (independent arms, the same prior on both). Everything is computed
by deterministic one-dimensional quadrature (``scipy.integrate.quad``) over the bulk of one posterior
(its 1e-13 .. 1 - 1e-13 quantiles, so at most 2e-13 of mass is left out):

- ``P(T > B) = ∫ f_T(t) F_B(t) dt``; for integer parameters this equals Evan Miller's closed-form
  sum (https://www.evanmiller.org/bayesian-ab-testing.html), which the tests check.
- ``E[max(B - T, 0)] = ∫ f_T(t) g_B(t) dt`` with ``g_B(t) = E[(B - t)+] = m_B SF_B+(t) - t SF_B(t)``,
  where ``B+ ~ Beta(a_B + 1, b_B)`` (because ``x f_Beta(a,b)(x) = a/(a+b) f_Beta(a+1,b)(x)``; the
  identity used in Stucchio's 2015 VWO Bayesian A/B testing white paper).
- The interval inverts ``P(T - B <= d) = ∫ f_B(b) F_T(b + d) db`` with Brent's method.

``draws > 0`` replaces the quadrature by a Monte Carlo estimate with that many draws per arm from a
fixed seed (``seed``), so the result is still deterministic; it exists as a cross-check.

Continuous metrics (:func:`bayes_continuous`): the normal approximation (as ``gbstats``). The data
give ``T - B ~ N(d, V)`` with ``d = m_t - m_b`` and ``V = v_t/n_t + v_b/n_b`` (sample variances).
With a flat prior the posterior of the difference is ``N(d, V)``; with a normal prior
``N(mu0, s0^2)`` on the difference it is the conjugate update ``N(d', V')`` with
``1/V' = 1/s0^2 + 1/V`` and ``d' = V' (mu0/s0^2 + d/V)``. Then ``P(T > B) = Phi(d'/sqrt(V'))``,
``E[max(-X, 0)] = sqrt(V') phi(d'/sqrt(V')) - d' Phi(-d'/sqrt(V'))`` for ``X ~ N(d', V')``, and
the interval is ``d' ± z_{1-alpha/2} sqrt(V')``.

Statuses:

- ``"ok"``: everything is computed.
- ``"prior_only"`` (binary): at least one arm has no units, so its posterior is the prior; the numbers
  are computed and show what the prior alone says about that arm.
- ``"n_too_small"`` (continuous): fewer than 2 units in an arm, so its variance is unknown; every
  number is ``None``.
- ``"zero_variance"`` (continuous): both arms have zero sample variance, so the likelihood is
  degenerate; ``abs_lift_mean`` is the observed difference, every other number is ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import integrate, optimize, special
from scipy import stats as sps

from experiments.stats.frequentist import SampleStats, _check_alpha, _check_binary

BayesStatus = Literal["ok", "prior_only", "n_too_small", "zero_variance"]

_TAIL = 1e-13  # posterior mass left out of each side of an integration range


@dataclass(frozen=True)
class BetaPrior:
    """Beta(alpha, beta) prior on each arm's conversion rate (binary metrics).

    The default Beta(1, 1) is uniform on [0, 1]; larger ``alpha + beta`` is a stronger prior that
    pulls both arms towards ``alpha / (alpha + beta)``.
    """

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        for field in ("alpha", "beta"):
            value = getattr(self, field)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"BetaPrior.{field} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class NormalPrior:
    """Normal prior ``N(mean, variance)`` on the absolute difference of means (treatment - baseline).

    ``variance=None`` (the default) is the flat, improper prior: the posterior is the normal
    likelihood itself. A flat prior has no centre, so a non-zero ``mean`` without a ``variance`` is
    rejected rather than silently ignored.
    """

    mean: float = 0.0
    variance: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.mean, int | float) and math.isfinite(self.mean)):
            raise ValueError(f"NormalPrior.mean must be a finite number, got {self.mean!r}")
        if self.variance is None:
            if self.mean != 0:
                raise ValueError(
                    f"NormalPrior.mean={self.mean!r} has no effect with a flat prior "
                    f"(variance=None); give a variance as well"
                )
            return
        v = self.variance
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"NormalPrior.variance must be a finite number > 0 or None, got {v!r}")


@dataclass(frozen=True)
class BayesResult:
    """Posterior summary of treatment versus baseline. See the module docstring."""

    method: Literal["beta_binomial", "normal"]
    abs_lift_mean: float | None
    credible_interval: tuple[float, float] | None
    chance_to_beat: float | None
    risk: float | None
    risk_baseline: float | None
    status: BayesStatus


@dataclass(frozen=True)
class _Beta:
    """A Beta(a, b) distribution with fast scalar pdf/cdf/sf via ``scipy.special``."""

    a: float
    b: float

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    def pdf(self, x: float) -> float:
        if x <= 0.0 or x >= 1.0:
            return 0.0
        log_pdf = (
            (self.a - 1) * math.log(x)
            + (self.b - 1) * math.log1p(-x)
            - special.betaln(self.a, self.b)
        )
        return math.exp(log_pdf)

    def cdf(self, x: float) -> float:
        return 0.0 if x <= 0.0 else 1.0 if x >= 1.0 else float(special.betainc(self.a, self.b, x))

    def sf(self, x: float) -> float:
        return 1.0 if x <= 0.0 else 0.0 if x >= 1.0 else float(special.betaincc(self.a, self.b, x))

    def ppf(self, q: float) -> float:
        return float(special.betaincinv(self.a, self.b, q))

    def bulk(self) -> tuple[float, float]:
        """The range holding all but ``2 * _TAIL`` of the mass."""
        return self.ppf(_TAIL), self.ppf(1 - _TAIL)

    def upper_partial_expectation(self, t: float) -> float:
        """``E[(X - t)+]`` = ``mean * SF_{Beta(a+1, b)}(t) - t * SF(t)``, clamped at 0."""
        shifted = _Beta(self.a + 1, self.b)
        return max(self.mean * shifted.sf(t) - t * self.sf(t), 0.0)


def _quad(func: Callable[[float], float], lo: float, hi: float, points: list[float]) -> float:
    """Adaptive quadrature on [lo, hi], told where the integrand turns (means of the posteriors)."""
    inside = sorted({p for p in points if lo < p < hi})
    with warnings.catch_warnings():
        # The tolerances are far below what a report shows; when QUADPACK cannot reach them (a
        # posterior piled up at 0 or 1) its estimate is still the best available, so its warning
        # would only be noise on the console.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, _ = integrate.quad(
            func,
            lo,
            hi,
            points=inside or None,
            epsabs=1e-13,
            epsrel=1e-10,
            limit=500,
        )
    return float(value)


def _chance_to_beat(t: _Beta, b: _Beta) -> float:
    """``P(T > B) = ∫ f_T(x) F_B(x) dx`` over the bulk of T (F_B is 0 below B's bulk)."""
    t_lo, t_hi = t.bulk()
    b_lo, b_hi = b.bulk()
    lo = max(t_lo, b_lo)
    if lo >= t_hi:
        return 0.0
    value = _quad(lambda x: t.pdf(x) * b.cdf(x), lo, t_hi, [t.mean, b.mean, b_hi])
    return min(max(value, 0.0), 1.0)


def _expected_loss(chosen: _Beta, other: _Beta) -> float:
    """``E[max(other - chosen, 0)] = ∫ f_chosen(x) E[(other - x)+] dx``."""
    lo, hi = chosen.bulk()
    _, o_hi = other.bulk()
    hi = min(hi, o_hi)  # above the other arm's bulk the loss is 0
    if lo >= hi:
        return 0.0
    value = _quad(
        lambda x: chosen.pdf(x) * other.upper_partial_expectation(x),
        lo,
        hi,
        [chosen.mean, other.mean],
    )
    return max(value, 0.0)


def _diff_cdf(t: _Beta, b: _Beta, d: float) -> float:
    """``P(T - B <= d) = ∫ f_B(x) F_T(x + d) dx``."""
    lo, hi = b.bulk()
    return _quad(lambda x: b.pdf(x) * t.cdf(x + d), lo, hi, [b.mean, t.mean - d])


def _diff_quantile(t: _Beta, b: _Beta, q: float) -> float:
    """Brent's method on ``P(T - B <= d) = q``; the bracket is the support [-1, 1] of T - B."""
    return float(
        optimize.brentq(lambda d: _diff_cdf(t, b, d) - q, -1.0, 1.0, xtol=1e-12, rtol=1e-12)
    )


def _monte_carlo(
    t: _Beta, b: _Beta, alpha: float, draws: int, seed: int
) -> tuple[tuple[float, float], float, float, float]:
    rng = np.random.default_rng(seed)
    diff = rng.beta(t.a, t.b, size=draws) - rng.beta(b.a, b.b, size=draws)
    lo, hi = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    return (
        (float(lo), float(hi)),
        float(np.mean(diff > 0)),
        float(np.mean(np.maximum(-diff, 0.0))),
        float(np.mean(np.maximum(diff, 0.0))),
    )


def bayes_binary(
    treatment: SampleStats,
    baseline: SampleStats,
    prior: BetaPrior = BetaPrior(),
    alpha: float = 0.05,
    draws: int = 0,
    seed: int = 0,
) -> BayesResult:
    """Beta–binomial comparison of two conversion rates (``sum`` = number of successes).

    Posteriors ``Beta(prior.alpha + x, prior.beta + n - x)`` per arm; chance to beat, expected
    losses and the equal-tailed ``1 - alpha`` interval of the difference by deterministic
    quadrature, or by a seeded Monte Carlo with ``draws`` draws when ``draws > 0`` (formulas in
    the module docstring). Degenerate case: an arm with n = 0 has the prior as its posterior and
    the status is ``"prior_only"``. A sum outside ``[0, n]``, a bad ``alpha`` or negative ``draws``
    is a ValueError.
    """
    _check_alpha(alpha)
    _check_binary("treatment", treatment)
    _check_binary("baseline", baseline)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 0:
        raise ValueError(f"bayes_binary: draws must be a whole number >= 0, got {draws!r}")
    t = _Beta(prior.alpha + treatment.sum, prior.beta + treatment.n - treatment.sum)
    b = _Beta(prior.alpha + baseline.sum, prior.beta + baseline.n - baseline.sum)
    status: BayesStatus = "prior_only" if treatment.n == 0 or baseline.n == 0 else "ok"
    lift = t.mean - b.mean
    if draws > 0:
        interval, chance, risk, risk_baseline = _monte_carlo(t, b, alpha, draws, seed)
    else:
        interval = (_diff_quantile(t, b, alpha / 2), _diff_quantile(t, b, 1 - alpha / 2))
        chance = _chance_to_beat(t, b)
        risk = _expected_loss(t, b)
        risk_baseline = _expected_loss(b, t)
    return BayesResult("beta_binomial", lift, interval, chance, risk, risk_baseline, status)


def bayes_continuous(
    treatment: SampleStats,
    baseline: SampleStats,
    prior: NormalPrior = NormalPrior(),
    alpha: float = 0.05,
) -> BayesResult:
    """Normal-approximation comparison of two means, with an optional normal prior on the difference.

    Posterior of ``T - B``: ``N(d, V)`` with ``d = m_t - m_b``, ``V = v_t/n_t + v_b/n_b`` under the
    flat prior, or its conjugate update with ``NormalPrior(mean, variance)``; chance to beat
    ``Phi(d/sqrt(V))``, risk ``sqrt(V) phi(d/sqrt(V)) - d Phi(-d/sqrt(V))`` (module docstring).
    Degenerate cases: n < 2 in an arm -> ``"n_too_small"`` (every number ``None``); both sample
    variances 0 -> ``"zero_variance"`` (only ``abs_lift_mean``).
    """
    _check_alpha(alpha)
    method: Literal["normal"] = "normal"
    if treatment.n < 2 or baseline.n < 2:
        return BayesResult(method, None, None, None, None, None, "n_too_small")
    d = treatment.mean - baseline.mean
    v = treatment.variance / treatment.n + baseline.variance / baseline.n
    if not math.isfinite(d) or not math.isfinite(v):
        raise ValueError(
            f"bayes_continuous: the sufficient statistics overflow a float "
            f"(treatment={treatment}, baseline={baseline})"
        )
    if v == 0:
        return BayesResult(method, d, None, None, None, None, "zero_variance")
    if prior.variance is not None:
        # conjugate normal update: precisions add, the mean is the precision-weighted average
        v_post = 1 / (1 / prior.variance + 1 / v)
        d, v = v_post * (prior.mean / prior.variance + d / v), v_post
    sd = math.sqrt(v)
    z = d / sd
    half = float(sps.norm.ppf(1 - alpha / 2)) * sd
    chance = float(sps.norm.cdf(z))
    density = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # 0.0, not a warning, far out
    risk = max(sd * density - d * float(sps.norm.cdf(-z)), 0.0)
    risk_baseline = max(sd * density + d * float(sps.norm.cdf(z)), 0.0)
    return BayesResult(method, d, (d - half, d + half), chance, risk, risk_baseline, "ok")
