"""Retention as time to churn: Kaplan–Meier, the k-sample log-rank test and the restricted mean
survival time (RMST), over per-day counts of churn events and censorings.

Time is measured in whole days since assignment. For each arm, :class:`SurvivalCounts` holds, for
every day ``d`` on which something happened, the number of customers who churned on day ``d``
(``events``) and the number whose follow-up ended on day ``d`` without churning (``censored``).
These counts are sufficient statistics for everything here, so the database aggregates them and
no per-customer row reaches Python (see :mod:`models.survival_sql`).

Conventions:

- **Ties**: on a day ``d``, events come before censorings. A customer censored on day ``d`` is in
  the risk set of day ``d`` (they were seen to survive day ``d``) and leaves it afterwards; this is
  the standard Kaplan–Meier convention and the one ``statsmodels`` (and R's ``survival``) use.
- **Step function**: ``S(t) = prod_{d_i <= t} (1 - events_i / at_risk_i)`` is right-continuous,
  so with whole-day times ``S`` is constant on ``[d, d + 1)``. Because a customer censored on day
  ``d`` survived day ``d``, an arm's curve is known on ``[0, last_day + 1)``.
- No NaN or infinity ever leaves this module: an undefined number is ``None`` with an explicit
  ``status`` (documented on each result). Bad input (negative counts, unsorted or repeated days,
  mismatched lengths, an empty arm, fewer than two arms) is a ValueError naming the arm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from experiments.stats.frequentist import _check_alpha, _finite, _interval

LogRankStatus = Literal["ok", "no_events", "reduced_df", "no_information"]
RmstStatus = Literal["ok", "horizon_beyond_follow_up", "zero_variance"]


@dataclass(frozen=True)
class SurvivalCounts:
    """Per-day churn events and censorings of one arm (days ascending, unique, >= 0).

    The functions below validate it and name the arm in any error (a bare container here, so
    that the message can say which arm is wrong).
    """

    days: tuple[int, ...]
    events: tuple[int, ...]
    censored: tuple[int, ...]


@dataclass(frozen=True)
class KaplanMeier:
    """The Kaplan–Meier curve of one arm at each input day, with pointwise confidence limits.

    ``at_risk[i]`` is the number still followed at the start of ``days[i]``; ``survival[i]`` is
    ``S(days[i])``, the probability of surviving past that day.
    """

    days: tuple[int, ...]
    at_risk: tuple[int, ...]
    survival: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]


@dataclass(frozen=True)
class LogRankResult:
    """k-sample log-rank test. See :func:`log_rank` for the statuses."""

    chi2: float | None
    df: int
    p_value: float | None
    status: LogRankStatus


@dataclass(frozen=True)
class RmstResult:
    """Restricted mean survival time per arm and its treatment − baseline difference.

    ``rmst`` and ``se`` are keyed ``"treatment"`` and ``"baseline"``. See :func:`rmst_difference`
    for the statuses.
    """

    horizon: int
    rmst: dict[str, float]
    se: dict[str, float]
    diff: float | None
    diff_ci: tuple[float, float] | None
    p_value: float | None
    status: RmstStatus


@dataclass(frozen=True)
class _Arm:
    """Validated counts of one arm as arrays, with the number at risk at the start of each day."""

    days: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    at_risk: np.ndarray


def _whole_numbers(values: Sequence[int], field: str, where: str) -> np.ndarray:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{where}: {field} must be a sequence of whole numbers, got {values!r}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"{where}: {field}[{i}] must be a whole number >= 0, got {v!r}")
    return np.asarray(values, dtype=np.int64).reshape(len(values))


def _validated(counts: SurvivalCounts, where: str) -> _Arm:
    """Check one arm's counts (naming ``where`` in every error) and compute its risk sets."""
    if not isinstance(counts, SurvivalCounts):
        raise ValueError(f"{where}: expected SurvivalCounts, got {type(counts).__name__}")
    days = _whole_numbers(counts.days, "days", where)
    events = _whole_numbers(counts.events, "events", where)
    censored = _whole_numbers(counts.censored, "censored", where)
    if not len(days) == len(events) == len(censored):
        raise ValueError(
            f"{where}: days, events and censored must have the same length, got "
            f"{len(days)}, {len(events)} and {len(censored)}"
        )
    steps = np.flatnonzero(np.diff(days) <= 0)
    if steps.size:
        i = int(steps[0])
        raise ValueError(
            f"{where}: days must be strictly ascending and unique, but day {int(days[i])} at "
            f"position {i} is followed by day {int(days[i + 1])}"
        )
    removed = events + censored
    total = int(removed.sum())
    if total == 0:
        raise ValueError(f"{where}: the arm is empty (no events and no censorings)")
    at_risk = total - np.concatenate(([0], np.cumsum(removed)[:-1]))
    return _Arm(days, events, censored, at_risk)


def _survival(arm: _Arm) -> tuple[np.ndarray, np.ndarray]:
    """``S`` after each day and Greenwood's sum ``sum d / (n (n - d))`` (inf once S = 0)."""
    n, d = arm.at_risk.astype(float), arm.events.astype(float)
    survival = np.cumprod(1.0 - d / n)
    with np.errstate(divide="ignore"):
        terms = np.where(d > 0, d / (n * (n - d)), 0.0)
    return survival, np.cumsum(terms)


def kaplan_meier(
    counts: SurvivalCounts, alpha: float = 0.05, *, arm: str = "kaplan_meier"
) -> KaplanMeier:
    """Kaplan–Meier estimate with Greenwood variance and log(−log) confidence limits.

    ``S(d) = prod_{d_i <= d} (1 - e_i / n_i)``; Greenwood (1926):
    ``Var S(d) = S(d)**2 * sum_{d_i <= d} e_i / (n_i (n_i - e_i))``. The pointwise interval is
    built on the complementary log-log scale (Kalbfleisch & Prentice 1980; Klein & Moeschberger
    2003, eq. 4.3.2), the default transform of statsmodels' survival intervals
    (``SurvfuncRight.quantile_ci(method="cloglog")``; ``SurvfuncRight`` itself gives ``S`` and its
    Greenwood SE): with ``theta = exp(z_{1-alpha/2} * sqrt(sum) / log S)`` the limits are
    ``(S**(1/theta), S**theta)``. Unlike the plain interval it stays inside [0, 1].

    Degenerate cases: before the first event ``S = 1`` and the interval is ``(1, 1)``; once every
    customer at risk has churned ``S = 0`` and the interval is ``(0, 0)``. ``arm`` names the input
    in error messages.
    """
    _check_alpha(alpha)
    data = _validated(counts, arm)
    survival, greenwood = _survival(data)
    z = float(sps.norm.ppf(1 - alpha / 2))
    low, high = survival.copy(), survival.copy()
    inside = (survival > 0) & (survival < 1)
    log_s = np.log(survival[inside])
    theta = np.exp(z * np.sqrt(greenwood[inside]) / log_s)
    low[inside] = survival[inside] ** (1 / theta)
    high[inside] = survival[inside] ** theta
    return KaplanMeier(
        days=tuple(int(v) for v in data.days),
        at_risk=tuple(int(v) for v in data.at_risk),
        survival=tuple(float(v) for v in survival),
        ci_low=tuple(float(v) for v in low),
        ci_high=tuple(float(v) for v in high),
    )


def _on_grid(arm: _Arm, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events and number at risk of one arm on the union of days ``grid``."""
    events = np.zeros(len(grid))
    events[np.searchsorted(grid, arm.days)] = arm.events
    removed = np.zeros(len(grid))
    removed[np.searchsorted(grid, arm.days)] = arm.events + arm.censored
    at_risk = removed.sum() - np.concatenate(([0.0], np.cumsum(removed)[:-1]))
    return events, at_risk


def log_rank(arms: Mapping[str, SurvivalCounts]) -> LogRankResult:
    """k-sample log-rank (Mantel–Haenszel) test that all arms share one survival function.

    At each day ``t`` with ``d_t`` events among ``n_t`` at risk (``n_{kt}``, ``d_{kt}`` per arm),
    ``r_{kt} = n_{kt} / n_t``; ``O_k - E_k = sum_t (d_{kt} - r_{kt} d_t)`` and
    ``V_{gh} = sum_t d_t (n_t - d_t) / (n_t - 1) * r_{gt} (delta_{gh} - r_{ht})``;
    ``chi2 = (O - E)' V^-1 (O - E)`` over k − 1 of the arms (one is dropped: the full ``V`` is
    singular) with ``df = k - 1``, ``p = 1 - F(chi2)`` (Klein & Moeschberger 2003, §7.3; as
    ``statsmodels.duration.survfunc.survdiff``). An arm that is never at risk beside another at an
    event carries no information and drops out first (``df`` is then smaller).

    Statuses: ``"no_events"`` — no arm has an event (chi2 and p are None); ``"no_information"``
    — events exist but never while two arms are at risk, so ``V = 0`` (None); ``"reduced_df"`` —
    some arm carries no information (e.g. all its customers were censored before any event), so
    the test compares the other arms with ``df = rank V < k - 1``; ``"ok"``. Fewer than two arms
    is a ValueError.
    """
    if len(arms) < 2:
        raise ValueError(f"log_rank needs at least 2 arms, got {len(arms)}: {sorted(arms)}")
    data = [_validated(counts, f"log_rank, arm {name!r}") for name, counts in arms.items()]
    df_full = len(data) - 1
    grid = np.unique(np.concatenate([a.days for a in data]))
    per_arm = [_on_grid(a, grid) for a in data]
    d_k = np.vstack([e for e, _ in per_arm])
    n_k = np.vstack([n for _, n in per_arm])
    d, n = d_k.sum(axis=0), n_k.sum(axis=0)
    if d.sum() == 0:
        return LogRankResult(None, df_full, None, "no_events")
    keep = (n > 1) & (d > 0)  # a single unit at risk contributes nothing to O - E or V
    d_k, n_k, d, n = d_k[:, keep], n_k[:, keep], d[keep], n[keep]
    r = n_k / n
    observed_minus_expected = (d_k - r * d).sum(axis=1)
    weight = d * (n - d) / (n - 1)
    variance = np.diag((r * weight).sum(axis=1)) - (r * weight) @ r.T
    return _log_rank_statistic(observed_minus_expected, variance, df_full)


def _log_rank_statistic(u: np.ndarray, variance: np.ndarray, df_full: int) -> LogRankResult:
    """``u' V^-1 u`` on k − 1 arms. The full k x k ``V`` has rows summing to 0 and so is singular
    by construction (in floating point its rows sum to ~1e-16, which an absolute rank test can
    mistake for full rank); dropping one arm gives the usual non-singular form. Arms with no
    information (their variance is 0: never at risk beside another arm at an event) are dropped
    first, and the rank of what remains is taken relative to its largest singular value."""
    diagonal = np.diag(variance).copy() if variance.size else np.zeros(0)
    scale = float(diagonal.max()) if diagonal.size else 0.0
    informative = np.flatnonzero(diagonal > scale * 1e-10) if scale > 0 else np.zeros(0, int)
    if informative.size < 2:
        return LogRankResult(None, df_full, None, "no_information")
    kept = informative[:-1]
    v, u_kept = variance[np.ix_(kept, kept)], u[kept]
    singular = np.linalg.svd(v, compute_uv=False)
    rank = int(np.sum(singular > singular[0] * len(kept) * 1e-12))
    if rank == len(kept):
        chi2 = _finite(float(u_kept @ np.linalg.solve(v, u_kept)))
    else:  # arms that are never at risk together: a generalised inverse on what is left
        chi2 = _finite(float(u_kept @ np.linalg.pinv(v, rcond=1e-10) @ u_kept))
    if chi2 is None or rank == 0:  # pragma: no cover - finite counts give a finite statistic
        return LogRankResult(None, df_full, None, "no_information")
    chi2 = max(chi2, 0.0)
    p_value = float(sps.chi2.sf(chi2, rank))
    return LogRankResult(chi2, rank, p_value, "ok" if rank == df_full else "reduced_df")


def _rmst(arm: _Arm, horizon: int) -> tuple[float, float] | None:
    """RMST up to ``horizon`` and its SE, or None when the curve is unknown that far."""
    survival, _ = _survival(arm)
    if horizon > arm.days[-1] + 1 and survival[-1] > 0:
        return None
    inside = arm.days < horizon
    days, s = arm.days[inside], survival[inside]
    # S is 1 on [0, first day) and s[i] on [days[i], days[i + 1]), the last step ending at horizon.
    breaks = np.concatenate(([0], days, [horizon])).astype(float)
    levels = np.concatenate(([1.0], s))
    widths = np.diff(breaks)
    area = float(levels @ widths)
    # A_i = area under S from days[i] to horizon.
    tail = np.cumsum((levels[1:] * widths[1:])[::-1])[::-1]
    n, e = arm.at_risk[inside].astype(float), arm.events[inside].astype(float)
    informative = (e > 0) & (n > e)  # when n == e, S drops to 0 and A_i = 0
    var = float(
        np.sum(tail[informative] ** 2 * e[informative] / (n[informative] * (n - e)[informative]))
    )
    return area, math.sqrt(var)


def rmst_difference(
    treatment: SurvivalCounts, baseline: SurvivalCounts, horizon: int, alpha: float = 0.05
) -> RmstResult:
    """Restricted mean survival time up to ``horizon`` days per arm, and treatment − baseline.

    ``RMST(h) = integral_0^h S(t) dt`` under the Kaplan–Meier step function: with whole-day times
    it is the mean number of whole days survived within the horizon, ``E[min(floor(T), h)]``.
    Variance (Klein & Moeschberger 2003, eq. 4.5.2):
    ``Var = sum_{d_i < h} A_i**2 * e_i / (n_i (n_i - e_i))`` with ``A_i = integral_{d_i}^h S(t) dt``.
    The arms are independent, so the difference has ``se = sqrt(se_t**2 + se_b**2)``, a normal
    CI ``diff ± z_{1-alpha/2} se`` and a two-sided z-test p-value (Royston & Parmar 2013).

    Statuses: ``"horizon_beyond_follow_up"`` — in some arm the curve is unknown up to the horizon
    (its last day + 1 < horizon while ``S`` > 0 there); the horizon is not silently shortened:
    ``rmst``/``se`` hold only the arms whose follow-up reaches it and diff, CI and p are None.
    ``"zero_variance"`` — neither arm has an informative event before the horizon (both SEs are
    0): ``diff`` is given, CI and p are None. Otherwise ``"ok"``. ``horizon`` must be a whole
    number >= 1.
    """
    _check_alpha(alpha)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(
            f"rmst_difference: horizon must be a whole number of days >= 1, got {horizon!r}"
        )
    arms = {
        "treatment": _validated(treatment, "rmst_difference, treatment arm"),
        "baseline": _validated(baseline, "rmst_difference, baseline arm"),
    }
    results = {name: _rmst(data, horizon) for name, data in arms.items()}
    rmst = {name: r[0] for name, r in results.items() if r is not None}
    se = {name: r[1] for name, r in results.items() if r is not None}
    if len(rmst) < 2:
        return RmstResult(horizon, rmst, se, None, None, None, "horizon_beyond_follow_up")
    diff = rmst["treatment"] - rmst["baseline"]
    se_diff = math.sqrt(se["treatment"] ** 2 + se["baseline"] ** 2)
    if se_diff == 0:
        return RmstResult(horizon, rmst, se, diff, None, None, "zero_variance")
    z = float(sps.norm.ppf(1 - alpha / 2))
    p_value = float(2 * sps.norm.sf(abs(diff / se_diff)))
    return RmstResult(horizon, rmst, se, diff, _interval(diff, z * se_diff), p_value, "ok")
