"""Build a report: run every method of the statistics engine on per-arm sufficient statistics.

For each metric and each non-baseline arm:

1. the fixed-horizon test (:mod:`experiments.stats`: two-proportion z or Welch's t), with Fisher's
   exact test instead of the z-test's p-value when an expected cell count is below 5;
2. CUPED (:mod:`experiments.stats.cuped`) when enabled and a pre-period covariate is given and removes
   at least 1% of the variance: the fixed-horizon numbers then come from Welch's t on the adjusted
   metric (the relative lift stays undefined when the raw baseline is 0), and the unadjusted ones
   are kept under ``cuped``;
3. the always-valid confidence sequence (:mod:`experiments.stats.sequential`);
4. the Bayesian posterior (:mod:`experiments.stats.bayes`);
5. the headline p-value (sequential or fixed, per ``analysis.method``) adjusted for multiple
   comparisons (:mod:`experiments.stats.multiple`) within its family: the primary and secondary metrics'
   comparisons form one family, the guardrails another (a guardrail asks "did we break
   something?" and should neither dilute nor be diluted by the success metrics).

``significant`` is ``adjusted headline p < alpha``. Experiments with three or more arms also get an
omnibus test per metric. The report adds the sample-ratio check, Kaplan-Meier / log-rank / RMST on
time to churn and a covariate balance table when their inputs are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from experiments.metrics import MetricKind, MetricRole
from experiments.report.models import (
    AnalysisSummary,
    ArmMetricStats,
    ArmSummary,
    BalanceRow,
    BayesSummary,
    Comparison,
    CupedSummary,
    MetricReport,
    OmnibusSummary,
    Report,
    RmstComparison,
    SequentialSummary,
    SrmSummary,
    SurvivalArm,
    SurvivalReport,
)
from experiments.spec import Analysis
from experiments.stats import ComparisonResult, SampleStats, compare, srm_test, welch_ttest
from experiments.stats.balance import balance_table
from experiments.stats.bayes import (
    BayesResult,
    BetaPrior,
    NormalPrior,
    bayes_binary,
    bayes_continuous,
)
from experiments.stats.cuped import CupedResult, PairedStats, cuped_adjust
from experiments.stats.fixed import fisher_exact_test, needs_exact, omnibus_test
from experiments.stats.multiple import adjust_by_role
from experiments.stats.sequential import SequentialSettings, sequential_test
from experiments.stats.survival import SurvivalCounts, kaplan_meier, log_rank, rmst_difference

Method = Literal["fixed", "sequential"]
# CUPED replaces the headline numbers only when it removes at least this share of the variance;
# below that it changes nothing a reader would act on, and the plain test is easier to explain.
CUPED_MIN_REDUCTION = 0.01
Correction = Literal["holm", "bh", "none"]


@dataclass(frozen=True)
class MetricInput:
    """One metric to report: its catalogue facts, every arm's sufficient statistics and,
    optionally, the paired sums with its pre-period value (for CUPED)."""

    name: str
    kind: MetricKind
    role: MetricRole
    description: str
    arm_stats: Mapping[str, SampleStats]
    paired: Mapping[str, PairedStats] | None = None


@dataclass(frozen=True)
class AnalysisSettings:
    """Which methods run and which one makes the headline. The defaults are the plain
    fixed-horizon analysis (what ``retain analyze`` uses for finished experiments)."""

    method: Method = "fixed"
    correction: Correction = "holm"
    cuped: bool = False
    sequential_tuning_n: int = 5_000
    beta_prior: tuple[float, float] = (1.0, 1.0)
    normal_prior: tuple[float, float | None] = (0.0, None)

    @classmethod
    def from_spec(cls, analysis: Analysis) -> AnalysisSettings:
        priors = analysis.priors
        return cls(
            method=analysis.method,
            correction=analysis.correction,
            cuped=analysis.cuped,
            sequential_tuning_n=analysis.sequential_tuning_n,
            beta_prior=(priors.binary.alpha, priors.binary.beta),
            normal_prior=(priors.continuous_mean, priors.continuous_variance),
        )


@dataclass(frozen=True)
class SurvivalInput:
    counts: Mapping[str, SurvivalCounts]
    horizon_days: int


@dataclass
class _Draft:
    """A comparison before the multiple-comparison adjustment."""

    metric: MetricInput
    arm: str
    fields: dict[str, object] = field(default_factory=dict)
    headline_p: float | None = None


def _iso_utc(value: datetime, name: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"build_report: {name} must be timezone-aware (UTC), got {value!r}")
    return value.astimezone(UTC).isoformat()


def _check_inputs(
    baseline: str,
    arm_weights: Mapping[str, float],
    metrics: Sequence[MetricInput],
    planted: Mapping[tuple[str, str], float],
) -> MetricInput:
    arms = list(arm_weights)
    if len(arms) < 2:
        raise ValueError(f"build_report needs at least 2 arms in arm_weights, got {arms}")
    if baseline not in arm_weights:
        raise ValueError(f"build_report: baseline arm {baseline!r} is not one of the arms {arms}")
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"build_report: metric names must be unique, repeated: {duplicates}")
    for m in metrics:
        if set(m.arm_stats) != set(arms):
            raise ValueError(
                f"build_report: metric {m.name!r} has statistics for arms {sorted(m.arm_stats)} "
                f"but the experiment's arms are {sorted(arms)}"
            )
    primaries = [m.name for m in metrics if m.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(
            f"build_report needs exactly one metric with role 'primary', got {primaries or 'none'}"
        )
    for metric_name, arm in planted:
        if metric_name not in names or arm not in arms or arm == baseline:
            raise ValueError(
                f"build_report: planted effect for ({metric_name!r}, {arm!r}) does not name a "
                f"reported metric and a non-baseline arm (metrics {names}, arms {arms})"
            )
    return next(m for m in metrics if m.role == "primary")


def _cuped_for(m: MetricInput, settings: AnalysisSettings) -> CupedResult | None:
    if not settings.cuped or m.paired is None:
        return None
    return cuped_adjust(m.paired)


def _bayes(
    m: MetricInput, t: SampleStats, b: SampleStats, settings: AnalysisSettings, alpha: float
) -> BayesResult:
    if m.kind == "binary":
        return bayes_binary(t, b, BetaPrior(*settings.beta_prior), alpha=alpha)
    mean, variance = settings.normal_prior
    return bayes_continuous(t, b, NormalPrior(mean, variance), alpha=alpha)


def _compare_arm(
    m: MetricInput,
    arm: str,
    baseline: str,
    alpha: float,
    settings: AnalysisSettings,
    cuped: CupedResult | None,
    planted: float | None,
) -> _Draft:
    t, b = m.arm_stats[arm], m.arm_stats[baseline]
    raw = compare(m.kind, t, b, alpha)
    fixed: ComparisonResult = raw
    p_value, method = raw.p_value, raw.method
    if (
        m.kind == "binary"
        and raw.status not in ("n_too_small", "zero_variance")
        and needs_exact(t, b)
    ):
        p_value, method = fisher_exact_test(t, b).p_value, "fisher_exact"
    cuped_summary = None
    seq_kind: MetricKind = m.kind
    seq_t, seq_b = t, b
    if cuped is not None:
        applied = (
            method != "fisher_exact"
            and cuped.status == "ok"
            and (cuped.variance_reduction or 0.0) >= CUPED_MIN_REDUCTION
        )
        if applied:
            seq_t, seq_b, seq_kind = cuped.adjusted[arm], cuped.adjusted[baseline], "continuous"
            fixed = welch_ttest(seq_t, seq_b, alpha)
            if raw.rel_lift is None:  # the baseline is 0: a relative lift stays undefined
                fixed = replace(fixed, rel_lift=None, rel_ci=None, status=raw.status)
            p_value, method = fixed.p_value, "cuped_welch_t"
        cuped_summary = CupedSummary(
            applied=applied,
            theta=cuped.theta,
            variance_reduction=cuped.variance_reduction,
            unadjusted_abs_lift=raw.abs_lift,
            unadjusted_abs_ci=raw.abs_ci,
            unadjusted_p_value=raw.p_value,
            status=cuped.status,
        )
    seq = sequential_test(
        seq_kind,
        seq_t,
        seq_b,
        SequentialSettings(tuning_n=settings.sequential_tuning_n, alpha=alpha),
    )
    if seq_kind != m.kind:  # CUPED applied: the posterior of the adjusted lift, as gbstats does
        mean, variance = settings.normal_prior
        bayes = bayes_continuous(seq_t, seq_b, NormalPrior(mean, variance), alpha=alpha)
    else:
        bayes = _bayes(m, t, b, settings, alpha)
    draft = _Draft(m, arm)
    draft.fields = {
        "arm": arm,
        "baseline": baseline,
        "abs_lift": fixed.abs_lift,
        "abs_ci": fixed.abs_ci,
        "rel_lift": fixed.rel_lift,
        "rel_ci": fixed.rel_ci,
        "p_value": p_value,
        "method": method,
        "status": fixed.status,
        "planted_abs_lift": planted,
        "correction": settings.correction,
        "headline": settings.method,
        "sequential": SequentialSummary(
            method=seq.method,
            abs_ci=seq.abs_ci,
            rel_ci=seq.rel_ci,
            p_value=seq.p_value,
            tuning_n=settings.sequential_tuning_n,
            status=seq.status,
        ),
        "bayes": BayesSummary(
            method=bayes.method,
            abs_lift_mean=bayes.abs_lift_mean,
            credible_interval=bayes.credible_interval,
            chance_to_beat=bayes.chance_to_beat,
            risk=bayes.risk,
            risk_baseline=bayes.risk_baseline,
            status=bayes.status,
        ),
        "cuped": cuped_summary,
    }
    draft.headline_p = seq.p_value if settings.method == "sequential" else p_value
    return draft


def _adjust(drafts: list[_Draft], settings: AnalysisSettings, alpha: float) -> None:
    adjusted = adjust_by_role(
        [d.headline_p for d in drafts], [d.metric.role for d in drafts], settings.correction
    )
    for d, p in zip(drafts, adjusted, strict=True):
        d.fields["p_value_adjusted"] = p
        d.fields["significant"] = p is not None and p < alpha


def _metric_report(
    m: MetricInput, arms: Sequence[str], comparisons: list[Comparison]
) -> MetricReport:
    omnibus = None
    if len(arms) >= 3 and all(m.arm_stats[a].n > 0 for a in arms):
        result = omnibus_test(m.kind, {a: m.arm_stats[a] for a in arms})
        omnibus = OmnibusSummary(
            method=result.method,
            statistic=result.statistic,
            df=result.df,
            df_denominator=result.df_denominator,
            p_value=result.p_value,
            status=result.status,
        )
    return MetricReport(
        name=m.name,
        kind=m.kind,
        role=m.role,
        description=m.description,
        arms=[
            ArmMetricStats(
                name=a,
                n=m.arm_stats[a].n,
                mean=m.arm_stats[a].mean,
                sum=float(m.arm_stats[a].sum),
                variance=m.arm_stats[a].variance,
            )
            for a in arms
        ],
        comparisons=comparisons,
        omnibus=omnibus,
    )


def _survival_report(
    data: SurvivalInput, arms: Sequence[str], baseline: str, alpha: float
) -> SurvivalReport:
    counts = {a: data.counts.get(a, SurvivalCounts((), (), ())) for a in arms}
    curves = []
    for a in arms:
        km = kaplan_meier(counts[a], alpha)
        curves.append(
            SurvivalArm(
                name=a,
                days=list(km.days),
                at_risk=list(km.at_risk),
                survival=list(km.survival),
                ci_low=list(km.ci_low),
                ci_high=list(km.ci_high),
            )
        )
    test = log_rank(counts)
    rmst = []
    for a in arms:
        if a == baseline:
            continue
        r = rmst_difference(counts[a], counts[baseline], data.horizon_days, alpha)
        rmst.append(
            RmstComparison(
                arm=a,
                baseline=baseline,
                rmst=r.rmst.get("treatment"),
                rmst_baseline=r.rmst.get("baseline"),
                diff=r.diff,
                diff_ci=r.diff_ci,
                p_value=r.p_value,
                status=r.status,
            )
        )
    return SurvivalReport(
        horizon_days=data.horizon_days,
        arms=curves,
        log_rank_chi2=test.chi2,
        log_rank_df=test.df,
        log_rank_p_value=test.p_value,
        log_rank_status=test.status,
        rmst=rmst,
    )


def _followed(survival: SurvivalInput, arms: Sequence[str]) -> bool:
    """Whether every arm has someone followed up, so the survival section can be computed."""
    return all(
        a in survival.counts
        and sum(survival.counts[a].events) + sum(survival.counts[a].censored) > 0
        for a in arms
    )


def build_report(
    *,
    experiment: str,
    hypothesis: str,
    computed_at: datetime,
    as_of: datetime,
    alpha: float,
    baseline: str,
    arm_weights: Mapping[str, float],
    metrics: Sequence[MetricInput],
    planted: Mapping[tuple[str, str], float] | None = None,
    settings: AnalysisSettings | None = None,
    survival: SurvivalInput | None = None,
    balance: Mapping[str, Mapping[str, SampleStats]] | None = None,
) -> Report:
    """Compare every non-baseline arm with ``baseline`` on every metric with every method, check
    the sample ratio (arms' ``n`` in the primary metric against ``arm_weights``) and add the
    survival and balance sections when given. ``planted`` maps ``(metric, arm)`` to the true
    absolute lift, known only in the synthetic demo. Raises ValueError naming the bad input."""
    if not 0 < alpha < 1:
        raise ValueError(f"build_report: alpha must be strictly between 0 and 1, got {alpha!r}")
    settings = settings or AnalysisSettings()
    planted = planted or {}
    primary = _check_inputs(baseline, arm_weights, metrics, planted)
    arms = list(arm_weights)
    drafts: list[_Draft] = []
    for m in metrics:
        cuped = _cuped_for(m, settings)
        for arm in arms:
            if arm != baseline:
                drafts.append(
                    _compare_arm(
                        m, arm, baseline, alpha, settings, cuped, planted.get((m.name, arm))
                    )
                )
    _adjust(drafts, settings, alpha)
    counts = [primary.arm_stats[a].n for a in arms]
    srm = srm_test(counts, [arm_weights[a] for a in arms])
    balance_rows = None
    # Balance needs every arm populated; a live experiment whose arm is still empty has none yet.
    populated = {
        name: per_arm
        for name, per_arm in (balance or {}).items()
        if set(per_arm) == set(arms) and all(per_arm[a].n > 0 for a in arms)
    }
    if populated:
        balance_rows = [
            BalanceRow(covariate=r.covariate, means=r.means, smd=r.smd, flagged=r.flagged)
            for r in balance_table(populated, baseline)
        ]
    return Report(
        experiment=experiment,
        hypothesis=hypothesis,
        computed_at=_iso_utc(computed_at, "computed_at"),
        as_of=_iso_utc(as_of, "as_of"),
        alpha=alpha,
        baseline=baseline,
        arms=[
            ArmSummary(name=a, weight=arm_weights[a], n=n)
            for a, n in zip(arms, counts, strict=True)
        ],
        srm=SrmSummary(
            p_value=srm.p_value,
            ok=srm.ok,
            chi2=srm.chi2,
            expected=dict(zip(arms, srm.expected, strict=True)),
        ),
        metrics=[
            _metric_report(
                m,
                arms,
                [Comparison(**d.fields) for d in drafts if d.metric is m],
            )
            for m in metrics
        ],
        analysis=AnalysisSummary(
            method=settings.method,
            correction=settings.correction,
            families=[
                "primary and secondary metrics: every non-baseline arm x metric",
                "guardrail metrics: every non-baseline arm x metric",
            ],
            cuped=settings.cuped,
            sequential_tuning_n=settings.sequential_tuning_n,
            priors={
                "beta_alpha": settings.beta_prior[0],
                "beta_beta": settings.beta_prior[1],
                "normal_mean": settings.normal_prior[0],
                "normal_variance": settings.normal_prior[1],
            },
        ),
        survival=(
            _survival_report(survival, arms, baseline, alpha)
            if survival is not None and _followed(survival, arms)
            else None
        ),
        balance=balance_rows,
    )
