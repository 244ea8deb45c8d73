"""CUPED variance reduction over paired sufficient statistics.

CUPED (Deng, Xu, Kohavi & Walker 2013, "Improving the Sensitivity of Online Controlled Experiments
by Utilizing Pre-Experiment Data", WSDM) replaces each unit's outcome ``Y`` by::

    Z = Y - theta * (X - mean_X)

where ``X`` is a pre-period covariate (the same metric over a lookback window before assignment)
and ``theta = Cov(X, Y) / Var(X)``. Because ``X`` is measured before assignment its mean is the
same in every arm, so the difference of ``Z`` means estimates the same effect as the difference of
``Y`` means, with the variance multiplied by ``1 - rho^2`` (``rho`` = corr(X, Y)).

Why one pooled theta. ``theta`` is estimated once over all arms together (the total covariance and
variance around the grand means, i.e. the OLS slope of Y on X on the pooled data), as in the paper
and in GrowthBook's ``gbstats``: the same linear correction is then applied to every arm, so the
comparison between arms stays a difference of means of one transformed metric (per-arm thetas
would adjust the arms differently and bias the difference whenever the arms' slopes differ by
chance); it uses all units, so the estimate is the most stable; and it needs nothing but the summed
paired sums. Its own sampling error is O(1/n) and is ignored, as is customary. The result is
asymptotically the ANCOVA estimate (OLS of Y on a treatment dummy and the centred X).

Everything derives in closed form from per-arm sums (``n``, ``ΣX``, ``ΣX²``, ``ΣY``, ``ΣY²``,
``ΣXY``, aggregated in SQL); with ``c = theta * mean_X`` (``mean_X`` pooled over all arms)::

    ΣZ  = ΣY - theta ΣX + n c
    ΣZ² = ΣY² - 2 theta ΣXY + theta² ΣX² + 2 c (ΣY - theta ΣX) + n c²

so the adjusted ``SampleStats`` feed the usual z / Welch tests unchanged.

``variance_reduction`` is ``1 - S_ZZ / S_YY`` where ``S`` are the within-arm sums of squared
deviations summed over arms (the pooled within-arm variances that enter the standard errors); it is
about ``rho^2`` and can be slightly negative when ``X`` is useless.

Statuses:

- ``"ok"``: adjusted.
- ``"n_too_small"``: fewer than 2 units over all arms; ``theta`` is undefined, the adjusted
  statistics are the unadjusted ones and ``theta``/``variance_reduction`` are ``None``.
- ``"no_covariate_variance"``: the covariate is constant over all units (e.g. a new metric with no
  pre-period history); same outcome as ``"n_too_small"``.
- ``"out_of_range"``: the sums are too large for the adjustment in float64; same outcome as
  ``"n_too_small"``.
- ``"zero_outcome_variance"``: adjusted, but the outcome does not vary within arms, so
  ``variance_reduction`` (a ratio to that variance) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from experiments.stats.frequentist import SampleStats

CupedStatus = Literal[
    "ok", "n_too_small", "no_covariate_variance", "zero_outcome_variance", "out_of_range"
]

# A sum of squared deviations below this fraction of the raw sum of squares is floating-point
# noise on a constant variable.
_RELATIVE_ZERO = 1e-12


@dataclass(frozen=True)
class PairedStats:
    """Per-arm sums of a pre-period covariate ``X`` and the outcome ``Y`` over the same units."""

    n: int
    sum_x: float
    sum_x2: float
    sum_y: float
    sum_y2: float
    sum_xy: float

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"PairedStats.n must be a whole number >= 0, got {self.n!r}")
        sums = ("sum_x", "sum_x2", "sum_y", "sum_y2", "sum_xy")
        for field in sums:
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"PairedStats.{field} must be a finite number, got {value!r}")
        for field in ("sum_x2", "sum_y2"):
            if getattr(self, field) < 0:
                raise ValueError(
                    f"PairedStats.{field} must be >= 0 (it is a sum of squares), "
                    f"got {getattr(self, field)!r}"
                )
        if self.n == 0 and any(getattr(self, f) != 0 for f in sums):
            raise ValueError(f"PairedStats with n=0 must have every sum 0, got {self}")

    @property
    def outcome(self) -> SampleStats:
        """The unadjusted outcome ``Y`` as ``SampleStats``."""
        return SampleStats(self.n, self.sum_y, self.sum_y2)


@dataclass(frozen=True)
class CupedResult:
    """Per-arm CUPED-adjusted statistics. See the module docstring for the statuses."""

    theta: float | None
    adjusted: dict[str, SampleStats]
    variance_reduction: float | None
    status: CupedStatus


def _adjust(s: PairedStats, theta: float, mean_x: float) -> SampleStats:
    c = theta * mean_x
    sum_z = s.sum_y - theta * s.sum_x + s.n * c
    sum_z2 = (
        s.sum_y2
        - 2 * theta * s.sum_xy
        + theta * theta * s.sum_x2
        + 2 * c * (s.sum_y - theta * s.sum_x)
        + s.n * c * c
    )
    # Z² sums to >= 0 exactly; the closed form can dip below 0 by rounding when Z is ~constant.
    return SampleStats(s.n, sum_z if s.n > 0 else 0.0, max(sum_z2, 0.0) if s.n > 0 else 0.0)


def cuped_adjust(arms: Mapping[str, PairedStats]) -> CupedResult:
    """CUPED-adjust every arm with one pooled ``theta = Cov(X, Y) / Var(X)`` (Deng et al. 2013).

    Returns per-arm ``SampleStats`` of ``Y - theta (X - mean_X)`` (``mean_X`` pooled over arms),
    ``theta`` and the pooled within-arm ``variance_reduction``; formulas in the module docstring.
    Degenerate cases: fewer than 2 units in total -> ``"n_too_small"``, constant covariate ->
    ``"no_covariate_variance"`` (both return the unadjusted statistics with ``theta=None``);
    outcome constant within arms -> ``"zero_outcome_variance"``. Fewer than 2 arms, or a value
    that is not ``PairedStats``, is a ValueError.
    """
    if len(arms) < 2:
        raise ValueError(f"cuped_adjust needs at least 2 arms, got {sorted(arms)}")
    for name, s in arms.items():
        if not isinstance(s, PairedStats):
            raise ValueError(
                f"cuped_adjust: arm {name!r} must be PairedStats, got {type(s).__name__}"
            )
    n = sum(s.n for s in arms.values())
    unadjusted = {name: s.outcome for name, s in arms.items()}
    if n < 2:
        return CupedResult(None, unadjusted, None, "n_too_small")
    try:
        sum_x = math.fsum(s.sum_x for s in arms.values())
        sum_x2 = math.fsum(s.sum_x2 for s in arms.values())
        sum_y = math.fsum(s.sum_y for s in arms.values())
        sum_xy = math.fsum(s.sum_xy for s in arms.values())
        sum_y2 = math.fsum(s.sum_y2 for s in arms.values())
    except OverflowError:  # the total of the arms' sums is beyond float64
        return CupedResult(None, unadjusted, None, "out_of_range")
    s_xx = sum_x2 - sum_x * sum_x / n
    if not all(map(math.isfinite, (sum_x, sum_x2, sum_y, sum_xy, sum_y2, s_xx))):
        return CupedResult(None, unadjusted, None, "out_of_range")
    if s_xx <= _RELATIVE_ZERO * sum_x2 or s_xx <= 0:
        return CupedResult(None, unadjusted, None, "no_covariate_variance")
    theta = (sum_xy - sum_x * sum_y / n) / s_xx
    mean_x = sum_x / n
    try:
        adjusted = {name: _adjust(s, theta, mean_x) for name, s in arms.items()}
    except ValueError:  # an adjusted sum overflowed (SampleStats refuses inf)
        return CupedResult(None, unadjusted, None, "out_of_range")
    ss_y = sum(s.centered_sum_squares for s in unadjusted.values())
    ss_z = sum(s.centered_sum_squares for s in adjusted.values())
    if not (math.isfinite(theta) and math.isfinite(ss_y) and math.isfinite(ss_z)):
        return CupedResult(None, unadjusted, None, "out_of_range")
    if ss_y <= _RELATIVE_ZERO * sum_y2 or ss_y <= 0:
        return CupedResult(theta, adjusted, None, "zero_outcome_variance")
    return CupedResult(theta, adjusted, 1 - ss_z / ss_y, "ok")
