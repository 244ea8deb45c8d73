"""Power analysis for a two-sided comparison of two means: sample size, MDE and power.

The normal approximation used by the v1 tests (two-proportion z, Welch t on large samples). With
``k = z_{1-alpha'/2} + z_{power}`` and the minimum detectable effect ``delta`` (absolute)::

    n per arm = k² (v_b + v_t) / delta²

- binary: ``v_b = p (1 - p)`` at the baseline rate ``p`` and ``v_t = p' (1 - p')`` at the
  alternative ``p' = p + delta`` (the "unpooled" formula: each arm's variance at its own rate under
  the alternative). For ``p = 0.10``, ``delta = 0.02`` it gives 3,839 per arm; the textbook pooled
  form ``[z_a sqrt(2 pbar qbar) + z_b sqrt(p q + p' q')]² / delta²`` with ``pbar = p + delta/2``
  gives 3,841, and Evan Miller's calculator (null variance ``2 p q`` at the baseline rate) 3,623.
  The tests pin all three so the choice is explicit.
- continuous: both arms get the baseline variance, ``v_b = v_t = sigma²`` (Cohen's d convention,
  as ``statsmodels.stats.power.NormalIndPower`` with ``effect_size = delta / sigma``).

Several arms. With ``arms > 2`` every treatment is compared with the baseline, ``arms - 1`` tests,
and ``alpha' = alpha / (arms - 1)`` (Bonferroni), so each comparison keeps its power while the
family-wise error stays at ``alpha``. With ``arms = 2``, ``alpha' = alpha``.

``power_at`` is the probability of a significant result in the direction of the effect,
``Phi(|delta|/se - z_{1-alpha'/2})`` with ``se = sqrt((v_b + v_t)/n)``: a "significant" result of the
wrong sign (probability below ``alpha'/2``) is not a detection, so it is not counted (unlike
statsmodels' two-sided ``NormalIndPower``, which adds ``Phi(-|delta|/se - z)``). The three functions
invert one another exactly: ``power_at(sample_size_per_arm(...)) >= power`` and ``mde_for_n`` inverts
the sample size formula
(closed form for continuous; for binary the root of the quadratic
``delta² (n + k²) - k² (1 - 2p) delta - 2 k² p (1 - p) = 0``, the positive ``delta``: an increase).

:func:`plan` turns a sample size into a duration for an arm split and a daily inflow of eligible
units. With unequal weights the smallest arm is the last to reach ``n_per_arm``, so it sets the
pace: ``total = n_per_arm * sum(w) / min(w)``. This is conservative: larger arms make their
comparisons slightly more powerful than planned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

from experiments.metrics import MetricKind

PLAN_HORIZONS_DAYS = (14, 28, 56)
MAX_SAMPLE = 1e15  # units per arm beyond which a plan is refused rather than overflowing


@dataclass(frozen=True)
class Plan:
    """Sample size and duration of an experiment. See :func:`plan`."""

    n_per_arm: int
    arms: int
    total: int
    daily_inflow: float | None
    days: float | None
    mde_in_days: dict[int, float]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _k(alpha: float, power: float, arms: int) -> tuple[float, float]:
    """``(z_{1-alpha'/2}, z_power)`` with the Bonferroni ``alpha' = alpha / (arms - 1)``."""
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    if not (isinstance(power, int | float) and 0 < power < 1):
        raise ValueError(f"power must be strictly between 0 and 1, got {power!r}")
    if isinstance(arms, bool) or not isinstance(arms, int) or arms < 2:
        raise ValueError(f"arms must be a whole number >= 2 (baseline included), got {arms!r}")
    z_alpha = float(sps.norm.ppf(1 - alpha / (2 * (arms - 1))))
    z_power = float(sps.norm.ppf(power))
    if z_alpha + z_power <= 0:
        raise ValueError(
            f"power={power!r} is below alpha/2; a test that rejects by chance already has that power"
        )
    return z_alpha, z_power


def _check_kind(kind: str) -> None:
    if kind not in ("binary", "continuous"):
        raise ValueError(f"unknown metric kind {kind!r}; expected 'binary' or 'continuous'")


def _binary_rate(baseline_mean: float) -> float:
    p = _number("baseline_mean", baseline_mean)
    if not 0 < p < 1:
        raise ValueError(
            f"binary metric: baseline_mean (the baseline conversion rate) must be strictly between "
            f"0 and 1, got {p!r}"
        )
    return p


def _continuous_variance(baseline_variance: float | None) -> float:
    if baseline_variance is None:
        raise ValueError("continuous metric: baseline_variance is required (the per-unit variance)")
    v = _number("baseline_variance", baseline_variance)
    if v <= 0:
        raise ValueError(f"continuous metric: baseline_variance must be > 0, got {v!r}")
    return v


def _variance_sum(
    kind: MetricKind, baseline_mean: float, baseline_variance: float | None, mde: float
) -> float:
    """``v_b + v_t`` for an absolute effect ``mde`` (module docstring)."""
    _check_kind(kind)
    delta = _number("mde", mde)
    if delta == 0:
        raise ValueError("mde must not be 0: no sample size detects a zero effect")
    if kind == "binary":
        p = _binary_rate(baseline_mean)
        alt = p + delta
        if not 0 < alt < 1:
            raise ValueError(
                f"binary metric: baseline rate {p!r} + mde {delta!r} = {alt!r} is not a rate "
                f"strictly between 0 and 1; choose a smaller mde"
            )
        return p * (1 - p) + alt * (1 - alt)
    _number("baseline_mean", baseline_mean)
    return 2 * _continuous_variance(baseline_variance)


def _check_n(n_per_arm: int) -> None:
    if isinstance(n_per_arm, bool) or not isinstance(n_per_arm, int) or n_per_arm < 2:
        raise ValueError(f"n_per_arm must be a whole number >= 2, got {n_per_arm!r}")


def sample_size_per_arm(
    kind: MetricKind,
    baseline_mean: float,
    baseline_variance: float | None,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    relative: bool = False,
) -> int:
    """Units per arm for a two-sided test to detect ``mde`` with ``power``: ``k² (v_b + v_t) / mde²``.

    ``mde`` is absolute (``0.02`` = two percentage points), or a fraction of ``baseline_mean`` when
    ``relative=True``. Binary: variances ``p(1-p)`` and ``p'(1-p')`` at ``p' = p + mde``
    (``baseline_variance`` is ignored, so the observed variance may be passed for either kind);
    continuous: ``2 * baseline_variance``. ``arms > 2`` applies Bonferroni over the ``arms - 1``
    comparisons with the baseline (module docstring). Rounded up. Bad input is a ValueError.
    """
    z_alpha, z_power = _k(alpha, power, arms)
    delta = _number("mde", mde)
    if relative:
        base = _number("baseline_mean", baseline_mean)
        if base == 0:
            raise ValueError("a relative mde needs a baseline_mean other than 0")
        delta = delta * base
    var_sum = _variance_sum(kind, baseline_mean, baseline_variance, delta)
    squared = delta * delta
    n = (z_alpha + z_power) ** 2 * var_sum / squared if squared > 0 else math.inf
    if not n < MAX_SAMPLE:
        raise ValueError(
            f"an mde of {mde!r} needs more than {MAX_SAMPLE:,.0f} units per arm; "
            "plan for a larger effect"
        )
    # the tolerance keeps an exact integer (up to rounding) from being bumped to the next one
    return max(math.ceil(n * (1 - 1e-12)), 2)


def mde_for_n(
    kind: MetricKind,
    baseline_mean: float,
    baseline_variance: float | None,
    n_per_arm: int,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
) -> float:
    """The smallest absolute increase detectable with ``n_per_arm`` units per arm at ``power``.

    Continuous: ``k sqrt(2 sigma² / n)``. Binary: the positive root of
    ``delta² (n + k²) - k² (1 - 2p) delta - 2 k² p (1 - p) = 0`` (the sample-size formula solved
    for ``delta`` with the treatment variance at ``p + delta``). ValueError when no increase of a
    binary rate is detectable (``n <= k² p / (1 - p)``: even ``p' = 1`` is too close).
    """
    z_alpha, z_power = _k(alpha, power, arms)
    _check_kind(kind)
    _check_n(n_per_arm)
    k2 = (z_alpha + z_power) ** 2
    n = n_per_arm
    if kind == "continuous":
        _number("baseline_mean", baseline_mean)
        mde = math.sqrt(k2 * 2 * _continuous_variance(baseline_variance) / n)
        if not math.isfinite(mde):
            raise ValueError(
                f"baseline_variance {baseline_variance!r} is too large to plan with in float64"
            )
        return mde
    p = _binary_rate(baseline_mean)
    q = 1 - p
    if n <= k2 * p / q:
        raise ValueError(
            f"binary metric: with n_per_arm={n} no increase of the rate {p!r} reaches power "
            f"{power!r} at alpha {alpha!r}; more than {math.floor(k2 * p / q)} units per arm are "
            f"needed"
        )
    a, b, c = n + k2, -k2 * (q - p), -2 * k2 * p * q
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def power_at(
    kind: MetricKind,
    baseline_mean: float,
    baseline_variance: float | None,
    mde: float,
    n_per_arm: int,
    alpha: float = 0.05,
    arms: int = 2,
) -> float:
    """Two-sided power to detect an absolute effect ``mde`` with ``n_per_arm`` units per arm.

    ``Phi(|mde|/se - z)``, ``se = sqrt((v_b + v_t)/n)``, ``z = z_{1-alpha'/2}`` (Bonferroni
    ``alpha'`` for ``arms > 2``), variances as in :func:`sample_size_per_arm`: the probability of a
    significant result with the sign of ``mde`` (the far tail is not a detection; module docstring).
    """
    z_alpha, _ = _k(alpha, 0.5, arms)
    _check_n(n_per_arm)
    var_sum = _variance_sum(kind, baseline_mean, baseline_variance, mde)
    shift = abs(mde) / math.sqrt(var_sum / n_per_arm)
    return float(sps.norm.cdf(shift - z_alpha))


def plan(
    kind: MetricKind,
    baseline_mean: float,
    baseline_variance: float | None,
    mde: float,
    alpha: float,
    power: float,
    arm_weights: Sequence[float],
    daily_inflow: float | None,
) -> Plan:
    """Sample size, total and duration for an arm split and a daily inflow of eligible units.

    ``n_per_arm`` is :func:`sample_size_per_arm` with ``arms = len(arm_weights)``. The smallest
    arm sets the pace: ``total = ceil(n_per_arm * sum(w) / min(w))``; ``days = total /
    daily_inflow``. ``mde_in_days[d]`` is the MDE reachable after ``d`` days (14, 28, 56) with the
    smallest arm's ``floor(daily_inflow * d * min(w) / sum(w))`` units; a horizon too short to
    detect anything is left out. Without ``daily_inflow`` the days are ``None`` and
    ``mde_in_days`` is empty.
    """
    if len(arm_weights) < 2:
        raise ValueError(f"plan needs at least 2 arm weights, got {list(arm_weights)}")
    for i, w in enumerate(arm_weights):
        if _number(f"arm_weights[{i}]", w) <= 0:
            raise ValueError(f"arm_weights[{i}] must be > 0, got {w!r}")
    arms = len(arm_weights)
    n = sample_size_per_arm(kind, baseline_mean, baseline_variance, mde, alpha, power, arms)
    top = max(arm_weights)  # relative weights in (0, 1]: their sum cannot overflow
    share = min(arm_weights) / top / math.fsum(w / top for w in arm_weights)
    if not (share > 0 and math.isfinite(n / share)):
        raise ValueError(f"arm_weights {list(arm_weights)} differ too much to plan with")
    total = math.ceil(n / share * (1 - 1e-12))
    if daily_inflow is None:
        return Plan(n, arms, total, None, None, {})
    inflow = _number("daily_inflow", daily_inflow)
    if inflow <= 0:
        raise ValueError(f"daily_inflow must be > 0 units per day, got {inflow!r}")
    reachable: dict[int, float] = {}
    for days in PLAN_HORIZONS_DAYS:
        units = inflow * days * share
        if not math.isfinite(units):
            continue
        n_days = math.floor(units)
        try:
            reachable[days] = mde_for_n(
                kind, baseline_mean, baseline_variance, n_days, alpha, power, arms
            )
        except ValueError:
            continue  # too few units by then (n < 2, or no detectable binary increase)
    return Plan(n, arms, total, inflow, total / inflow, reachable)
