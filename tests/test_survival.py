"""Survival statistics against independent references: statsmodels ``SurvfuncRight`` and
``survdiff`` on the expanded per-customer data, published worked examples, a bootstrap and seeded
simulations with known exponential hazards."""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from experiments.stats.survival import (
    SurvivalCounts,
    kaplan_meier,
    log_rank,
    rmst_difference,
)


def from_units(times: np.ndarray, churned: np.ndarray) -> SurvivalCounts:
    """Per-day counts from per-customer whole-day times and event flags."""
    times, churned = np.asarray(times, dtype=int), np.asarray(churned, dtype=bool)
    days = np.unique(times)
    index = np.searchsorted(days, times)
    events = np.bincount(index, weights=churned, minlength=len(days))
    censored = np.bincount(index, weights=~churned, minlength=len(days))
    return SurvivalCounts(
        tuple(int(d) for d in days),
        tuple(int(e) for e in events),
        tuple(int(c) for c in censored),
    )


def random_units(
    rng: np.random.Generator, n: int, hazard: float, follow_up: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-day exponential churn times, censored at a uniform whole day below ``follow_up``."""
    churn = np.floor(rng.exponential(1 / hazard, n)).astype(int)
    censor = rng.integers(0, follow_up, n)
    return np.minimum(churn, censor), churn <= censor


def assert_finite(result: object) -> None:
    """No NaN or infinity anywhere in a result dataclass (tuples and dicts included)."""

    def numbers(value: object) -> list[float]:
        if isinstance(value, dict):
            return [x for v in value.values() for x in numbers(v)]
        if isinstance(value, tuple):
            return [x for v in value for x in numbers(v)]
        return [value] if isinstance(value, float) else []

    assert all(math.isfinite(x) for x in numbers(astuple(result))), result  # type: ignore[call-overload]


# The 6-MP arm of the Freireich et al. (1963) leukaemia trial, in weeks (Klein & Moeschberger 2003,
# Table 1.2 and Example 4.2); the placebo arm has no censoring.
MP_TIMES = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]
SIX_MP = from_units(np.array(MP_TIMES), np.array(MP_EVENT))
PLACEBO_ARM = from_units(np.array(PLACEBO), np.ones(21))


# --- Kaplan–Meier --------------------------------------------------------------------------------


def test_kaplan_meier_six_mp_published_values() -> None:
    km = kaplan_meier(SIX_MP)
    at = {d: i for i, d in enumerate(km.days)}
    # Klein & Moeschberger (2003), Table 4.1B: event time, number at risk, S(t).
    table = [
        (6, 21, 0.857),
        (7, 17, 0.807),
        (10, 15, 0.753),
        (13, 12, 0.690),
        (16, 11, 0.627),
        (22, 7, 0.538),
        (23, 6, 0.448),
    ]
    for day, at_risk, survival in table:
        assert km.at_risk[at[day]] == at_risk
        assert km.survival[at[day]] == pytest.approx(survival, abs=5e-4)
    # A censoring-only day carries the curve of the previous event day.
    assert km.survival[at[9]] == km.survival[at[7]]
    assert km.at_risk[at[35]] == 1


def test_kaplan_meier_equals_statsmodels_on_expanded_units() -> None:
    rng = np.random.default_rng(20261102)
    times, churned = random_units(rng, 400, hazard=0.03)
    counts = from_units(times, churned)
    km = kaplan_meier(counts, alpha=0.1)
    ref = SurvfuncRight(times, churned.astype(float))
    at = {d: i for i, d in enumerate(km.days)}
    rows = [at[int(t)] for t in ref.surv_times]
    assert [km.at_risk[i] for i in rows] == ref.n_risk.astype(int).tolist()
    assert [km.survival[i] for i in rows] == pytest.approx(ref.surv_prob, rel=1e-12)
    # log(-log) interval from statsmodels' Greenwood SE: g = log(-log S), se_g = se / (S |log S|).
    s, se = ref.surv_prob, ref.surv_prob_se
    g, se_g = np.log(-np.log(s)), se / (s * np.abs(np.log(s)))
    z = sps.norm.ppf(0.95)
    assert [km.ci_low[i] for i in rows] == pytest.approx(np.exp(-np.exp(g + z * se_g)), rel=1e-9)
    assert [km.ci_high[i] for i in rows] == pytest.approx(np.exp(-np.exp(g - z * se_g)), rel=1e-9)
    assert all(lo <= s <= hi for lo, s, hi in zip(km.ci_low, km.survival, km.ci_high, strict=True))


def test_kaplan_meier_degenerate_ends_have_point_intervals() -> None:
    km = kaplan_meier(SurvivalCounts((0, 3, 5), (0, 2, 1), (2, 0, 0)))
    # Day 0: only censorings, S = 1. Day 5: the last one at risk churns, S = 0.
    assert (km.days, km.at_risk) == ((0, 3, 5), (5, 3, 1))
    assert km.survival == pytest.approx((1.0, 1 / 3, 0.0))
    assert (km.ci_low[0], km.ci_high[0], km.ci_low[2], km.ci_high[2]) == (1.0, 1.0, 0.0, 0.0)
    assert 0 < km.ci_low[1] < 1 / 3 < km.ci_high[1] < 1
    assert_finite(km)


# --- log-rank ------------------------------------------------------------------------------------


def test_log_rank_six_mp_versus_placebo_published() -> None:
    result = log_rank({"6-MP": SIX_MP, "placebo": PLACEBO_ARM})
    # R: survdiff(Surv(time, status) ~ group) on the Freireich data: Chisq = 16.8 on 1 df, p = 4e-05.
    assert result.chi2 == pytest.approx(16.79, abs=0.01)
    assert result.df == 1 and result.status == "ok"
    assert result.p_value == pytest.approx(4.17e-05, rel=1e-2)


@pytest.mark.parametrize("hazards", [(0.03, 0.02), (0.03, 0.025, 0.04)])
def test_log_rank_equals_statsmodels_survdiff(hazards: tuple[float, ...]) -> None:
    rng = np.random.default_rng(len(hazards))
    units = [random_units(rng, 300, h) for h in hazards]
    arms = {f"arm{k}": from_units(t, e) for k, (t, e) in enumerate(units)}
    result = log_rank(arms)
    chi2, p = survdiff(
        np.concatenate([t for t, _ in units]),
        np.concatenate([e for _, e in units]).astype(float),
        np.concatenate([np.full(len(t), k) for k, (t, _) in enumerate(units)]),
    )
    assert result.chi2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
    assert result.df == len(hazards) - 1 and result.status == "ok"


def test_log_rank_arm_without_information_reduces_df() -> None:
    # "new" was censored on day 0 and no one churns on day 0, so it is never at risk at an event.
    new = SurvivalCounts((0,), (0,), (50,))
    two = {"a": SIX_MP, "b": PLACEBO_ARM}
    reduced = log_rank({**two, "new": new})
    assert reduced.status == "reduced_df" and reduced.df == 1
    assert reduced.chi2 == pytest.approx(log_rank(two).chi2, rel=1e-9)
    assert reduced.p_value == pytest.approx(log_rank(two).p_value, rel=1e-9)


def test_log_rank_degenerate_statuses() -> None:
    quiet = SurvivalCounts((3, 9), (0, 0), (4, 6))
    assert log_rank({"a": quiet, "b": quiet}).status == "no_events"
    no_events = log_rank({"a": quiet, "b": SurvivalCounts((1,), (0,), (5,))})
    assert (no_events.chi2, no_events.p_value, no_events.status) == (None, None, "no_events")
    # Churn only happens on day 5, after the other arm's follow-up ended on day 2.
    apart = log_rank({"a": SurvivalCounts((5,), (3,), (2,)), "b": SurvivalCounts((2,), (0,), (4,))})
    assert (apart.chi2, apart.p_value, apart.status) == (None, None, "no_information")


# --- RMST ----------------------------------------------------------------------------------------


def test_rmst_six_mp_published() -> None:
    result = rmst_difference(SIX_MP, PLACEBO_ARM, horizon=35)
    # Klein & Moeschberger (2003), §4.5, 6-MP arm: mean restricted to 35 weeks 23.287, SE 2.827.
    assert result.rmst["treatment"] == pytest.approx(23.287, abs=1e-3)
    assert result.se["treatment"] == pytest.approx(2.827, abs=1e-3)
    # Placebo: no censoring, so RMST is the plain mean of min(T, 35) = mean time 8.667 weeks.
    assert result.rmst["baseline"] == pytest.approx(np.mean(PLACEBO), rel=1e-12)
    assert result.se["baseline"] == pytest.approx(np.std(PLACEBO) / math.sqrt(21), rel=1e-9)
    assert result.status == "ok" and result.diff == pytest.approx(23.287 - 8.667, abs=1e-3)


def km_area(times: np.ndarray, churned: np.ndarray, horizon: int) -> float:
    """Area under the statsmodels Kaplan–Meier step function on [0, horizon], midpoint rule."""
    ref = SurvfuncRight(times, churned.astype(float))
    step = 1e-3
    grid = np.arange(0, horizon, step) + step / 2
    index = np.searchsorted(ref.surv_times, grid, side="right") - 1
    curve = np.where(index >= 0, ref.surv_prob[np.maximum(index, 0)], 1.0)
    return float(curve.sum() * step)


@pytest.mark.parametrize("horizon", [1, 17, 45])
def test_rmst_equals_area_under_statsmodels_curve(horizon: int) -> None:
    rng = np.random.default_rng(horizon)
    treat, base = random_units(rng, 250, 0.02), random_units(rng, 250, 0.04)
    result = rmst_difference(from_units(*treat), from_units(*base), horizon, alpha=0.1)
    assert result.rmst["treatment"] == pytest.approx(km_area(*treat, horizon), rel=1e-9)
    assert result.rmst["baseline"] == pytest.approx(km_area(*base, horizon), rel=1e-9)
    diff, se = result.diff, math.hypot(result.se["treatment"], result.se["baseline"])
    assert result.status == "ok" and diff is not None
    assert diff == result.rmst["treatment"] - result.rmst["baseline"]
    half = float(sps.norm.ppf(0.95)) * se
    assert result.diff_ci == pytest.approx((diff - half, diff + half), rel=1e-12)
    assert result.p_value == pytest.approx(2 * sps.norm.sf(abs(diff) / se), rel=1e-9)


def test_rmst_se_matches_a_seeded_bootstrap() -> None:
    rng = np.random.default_rng(7)
    times, churned = random_units(rng, 300, 0.03, follow_up=60)
    horizon = 30
    counts = from_units(times, churned)
    analytic = rmst_difference(counts, counts, horizon).se["treatment"]
    # Resampling customers with replacement is a multinomial draw over the (day, event) cells.
    cells = np.array(counts.events + counts.censored) / len(times)
    n_days = len(counts.days)
    draws = rng.multinomial(len(times), cells, size=2000)
    rmsts = []
    for draw in draws:
        keep = draw[:n_days] + draw[n_days:] > 0
        sample = SurvivalCounts(
            tuple(d for d, k in zip(counts.days, keep, strict=True) if k),
            tuple(int(v) for v in draw[:n_days][keep]),
            tuple(int(v) for v in draw[n_days:][keep]),
        )
        rmsts.append(rmst_difference(sample, sample, horizon).rmst["treatment"])
    # 2,000 replicates: the bootstrap SD has a Monte Carlo error of about 1.6 %;
    # measured 0.6815 (formula) against 0.6818 (bootstrap).
    assert analytic == pytest.approx(float(np.std(rmsts, ddof=1)), rel=0.05)


def test_rmst_statuses() -> None:
    short = SurvivalCounts((2, 10), (1, 0), (0, 5))  # followed up to day 10, S > 0 there
    beyond = rmst_difference(SIX_MP, short, horizon=12)
    assert beyond.status == "horizon_beyond_follow_up"
    assert (beyond.diff, beyond.diff_ci, beyond.p_value) == (None, None, None)
    assert set(beyond.rmst) == {"treatment"}  # the arm whose follow-up reaches the horizon
    # Day 10 was seen to its end, so the curve is known up to 11.
    assert rmst_difference(SIX_MP, short, horizon=11).status == "ok"
    # The placebo curve reaches 0 on day 23, so it is known for any horizon.
    assert rmst_difference(SIX_MP, PLACEBO_ARM, horizon=35).status == "ok"
    quiet = rmst_difference(short, SurvivalCounts((9,), (0,), (3,)), horizon=2)
    assert quiet.status == "zero_variance" and quiet.diff == 0.0
    assert (quiet.diff_ci, quiet.p_value) == (None, None)
    assert_finite(beyond)
    assert_finite(quiet)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (
            SurvivalCounts((1, 2), (1, -1), (0, 0)),
            r"arm 'treat'.*events\[1\] must be a whole number >= 0",
        ),
        (SurvivalCounts((3, 2), (1, 1), (0, 0)), r"arm 'treat'.*strictly ascending.*day 3"),
        (SurvivalCounts((2, 2), (1, 1), (0, 0)), r"arm 'treat'.*strictly ascending"),
        (SurvivalCounts((1, 2), (1,), (0, 0)), r"arm 'treat'.*same length"),
        (SurvivalCounts((-1,), (1,), (0,)), r"arm 'treat'.*days\[0\]"),
        (SurvivalCounts((1,), (0,), (0,)), r"arm 'treat'.*empty"),
        (SurvivalCounts((1,), (1.5,), (0,)), r"arm 'treat'.*events\[0\]"),  # type: ignore[arg-type]
    ],
)
def test_bad_counts_name_the_arm(counts: SurvivalCounts, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_rank({"control": SIX_MP, "treat": counts})
    with pytest.raises(ValueError, match="treatment arm"):
        rmst_difference(counts, SIX_MP, 10)
    with pytest.raises(ValueError, match="'treat'"):
        kaplan_meier(counts, arm="arm 'treat'")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2 arms"):
        log_rank({"only": SIX_MP})
    with pytest.raises(ValueError, match="horizon must be a whole number of days >= 1"):
        rmst_difference(SIX_MP, SIX_MP, 0)
    with pytest.raises(ValueError, match="alpha"):
        kaplan_meier(SIX_MP, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        rmst_difference(SIX_MP, SIX_MP, 10, alpha=0)


# --- simulations ---------------------------------------------------------------------------------

TICKS_PER_DAY = 24  # simulate in hours so whole-tick RMST is within 1/48 day of continuous time


def staggered_arm(
    rng: np.random.Generator, n: int, hazard: float, horizon_days: int
) -> SurvivalCounts:
    """Exponential churn (per day) under staggered entry, counted as models.survival_sql does:
    followed for the whole ticks elapsed (uniform up to 1.5 horizons), capped at the horizon."""
    horizon = horizon_days * TICKS_PER_DAY
    churn = np.floor(rng.exponential(1 / hazard, n) * TICKS_PER_DAY).astype(int)
    followed = np.minimum(np.floor(rng.uniform(0, 1.5 * horizon, n)).astype(int), horizon)
    event = churn < followed
    keep = followed >= 1
    return from_units(np.where(event, churn, followed - 1)[keep], event[keep])


def true_rmst(hazard: float, horizon_days: int) -> float:
    """Exponential churn: RMST(h) = (1 - exp(-lambda h)) / lambda."""
    return (1 - math.exp(-hazard * horizon_days)) / hazard


@pytest.mark.slow
def test_rmst_difference_ci_covers_the_true_difference() -> None:
    rng = np.random.default_rng(31)
    horizon_days, lam_t, lam_b = 30, 0.015, 0.025
    truth = true_rmst(lam_t, horizon_days) - true_rmst(lam_b, horizon_days)
    covered, km_covered, reps = 0, 0, 4000
    day_20 = 20 * TICKS_PER_DAY
    for _ in range(reps):
        treat = staggered_arm(rng, 300, lam_t, horizon_days)
        base = staggered_arm(rng, 300, lam_b, horizon_days)
        result = rmst_difference(treat, base, horizon_days * TICKS_PER_DAY)
        assert result.diff_ci is not None
        low, high = (x / TICKS_PER_DAY for x in result.diff_ci)
        covered += low <= truth <= high
        km = kaplan_meier(base)
        i = int(np.searchsorted(km.days, day_20, side="right")) - 1
        km_covered += (
            km.ci_low[i] <= math.exp(-lam_b * (day_20 + 1) / TICKS_PER_DAY) <= km.ci_high[i]
        )
    # 4,000 replicates: the coverage estimate has SE 0.0034; measured 0.950 and 0.950 (seed 31).
    assert covered / reps == pytest.approx(0.95, abs=0.015)
    assert km_covered / reps == pytest.approx(0.95, abs=0.015)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 3])
def test_log_rank_aa_false_positive_rate(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    reps = 4000
    rejections = 0
    for _ in range(reps):
        arms = {f"arm{j}": staggered_arm(rng, 150, 0.03, 30) for j in range(k)}
        result = log_rank(arms)
        assert result.p_value is not None
        rejections += result.p_value < 0.05
    # 4,000 replicates: SE of the rate 0.0034; measured 0.0465 (2 arms) and 0.0548 (3 arms).
    assert rejections / reps == pytest.approx(0.05, abs=0.012)
