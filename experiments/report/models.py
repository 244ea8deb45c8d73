"""The ``report.json`` contract: pydantic models, documented for users in the README.

Field names are a public contract: add fields, never rename or remove them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from experiments.metrics import MetricKind, MetricRole
from experiments.stats import ComparisonStatus

Interval = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSummary(_Model):
    name: str
    weight: float
    n: int


class SrmSummary(_Model):
    p_value: float
    ok: bool
    chi2: float
    expected: dict[str, float]


class ArmMetricStats(_Model):
    name: str
    n: int
    mean: float
    sum: float
    variance: float


class SequentialSummary(_Model):
    """Always-valid inference: safe however often the experiment is looked at."""

    method: str
    abs_ci: Interval | None
    rel_ci: Interval | None
    p_value: float | None
    tuning_n: int
    status: str


class BayesSummary(_Model):
    method: str
    abs_lift_mean: float | None
    credible_interval: Interval | None
    chance_to_beat: float | None
    risk: float | None
    risk_baseline: float | None
    status: str


class CupedSummary(_Model):
    """CUPED adjustment with the metric's own pre-period value (the headline uses it when
    ``applied``)."""

    applied: bool
    theta: float | None
    variance_reduction: float | None
    unadjusted_abs_lift: float | None
    unadjusted_abs_ci: Interval | None
    unadjusted_p_value: float | None
    status: str


class Comparison(_Model):
    arm: str
    baseline: str
    abs_lift: float | None
    abs_ci: Interval | None
    rel_lift: float | None
    rel_ci: Interval | None
    p_value: float | None
    method: str
    status: ComparisonStatus
    significant: bool
    planted_abs_lift: float | None
    p_value_adjusted: float | None = None
    correction: Literal["holm", "bh", "none"] = "none"
    headline: Literal["fixed", "sequential"] = "fixed"
    sequential: SequentialSummary | None = None
    bayes: BayesSummary | None = None
    cuped: CupedSummary | None = None


class OmnibusSummary(_Model):
    method: str
    statistic: float | None
    df: int
    df_denominator: float | None = None
    p_value: float | None
    status: str


class MetricReport(_Model):
    name: str
    kind: MetricKind
    role: MetricRole
    description: str
    arms: list[ArmMetricStats]
    comparisons: list[Comparison]
    omnibus: OmnibusSummary | None = None


class AnalysisSummary(_Model):
    """How the numbers were computed."""

    method: Literal["fixed", "sequential"]
    correction: Literal["holm", "bh", "none"]
    families: list[str]
    cuped: bool
    sequential_tuning_n: int
    priors: dict[str, float | None]


class SurvivalArm(_Model):
    name: str
    days: list[int]
    at_risk: list[int]
    survival: list[float]
    ci_low: list[float]
    ci_high: list[float]


class RmstComparison(_Model):
    arm: str
    baseline: str
    rmst: float | None
    rmst_baseline: float | None
    diff: float | None
    diff_ci: Interval | None
    p_value: float | None
    status: str


class SurvivalReport(_Model):
    """Time to churn: Kaplan-Meier per arm, log-rank test and restricted mean survival time."""

    horizon_days: int
    arms: list[SurvivalArm]
    log_rank_chi2: float | None
    log_rank_df: int
    log_rank_p_value: float | None
    log_rank_status: str
    rmst: list[RmstComparison]


class BalanceRow(_Model):
    covariate: str
    means: dict[str, float]
    smd: dict[str, float | None]
    flagged: bool


Badge = Literal["green", "amber", "red"]
TrustCheckKind = Literal[
    "srm", "srm_stratum", "balance", "sample_size", "immature", "cuped", "auto_stop", "freshness"
]
Decision = Literal["ship", "stop_arm", "no_difference_yet", "no_difference", "hold"]


class Verdict(_Model):
    """What to do, in plain language, by the headline method (``method``): ship an arm, stop an
    arm for guardrail harm, wait (with how many more customers and days), or hold (the data cannot
    be trusted). ``text`` is the sentence people read; the other fields are its numbers."""

    decision: Decision
    text: str
    arm: str | None
    metric: str
    method: Literal["fixed", "sequential"]
    abs_lift: float | None
    ci: Interval | None
    per_10k: float | None
    money_metric: str | None
    money_per_month: float | None
    currency: str
    inflow_per_day: float | None
    mde: float | None
    n_needed_per_arm: int | None
    more_per_arm: int | None
    days_needed: float | None
    stop_arms: list[str] = []


class TrustCheck(_Model):
    """One trust check as a badge: green (fine), amber (read with care) or red (do not act)."""

    check: TrustCheckKind
    status: Badge
    title: str
    detail: str


class StratumSrm(_Model):
    """The sample-ratio check within one stratum (experiments stratified by ``stratify_by``)."""

    stratum: str
    counts: dict[str, int]
    p_value: float | None
    ok: bool


class AutoStopDecision(_Model):
    """An automatic stop of an arm or of the experiment, as the evaluation recorded it, with the
    always-valid comparison it was taken on (``compared_arm`` against ``baseline`` on ``metric``;
    for a winner stop, the winner's). ``kind``: ``guardrail_harm``, ``primary_harm`` or
    ``winner``; ``in_effect`` is false once a person resumed the arm in the YAML."""

    decided_at: str
    arm: str | None
    action: str
    reason: str
    kind: str | None = None
    metric: str | None = None
    compared_arm: str | None = None
    baseline: str | None = None
    abs_lift: float | None = None
    ci: Interval | None = None
    p_value: float | None = None
    method: str | None = None
    as_of: str | None = None
    in_effect: bool = True


class Trust(_Model):
    """Can the numbers be trusted? The badges, and the facts behind them."""

    checks: list[TrustCheck]
    srm_strata: list[StratumSrm] = []
    srm_strata_checked_at: str | None = None
    auto_stops: list[AutoStopDecision] = []
    last_import_at: str | None = None
    last_import_source: str | None = None
    data_loaded_directly: bool = False
    assigned: int = 0
    not_yet_counted: dict[str, int] = {}


class LiftPoint(_Model):
    """The lift as the report would have shown it ``day`` days after the first assignment."""

    day: int
    n: int
    n_baseline: int
    abs_lift: float | None
    ci: Interval | None


class LiftSeriesArm(_Model):
    arm: str
    points: list[LiftPoint]


class LiftOverTime(_Model):
    """The primary metric's lift and always-valid CI by day since the first assignment (without
    CUPED: the daily points use the plain sufficient statistics)."""

    metric: str
    kind: MetricKind
    method: str
    started_at: str | None
    arms: list[LiftSeriesArm]


class FunnelArm(_Model):
    """Customers of one arm at each stage. ``None``: this arm has no records for the stage (the
    control arm, before "would have sent" records exist; delivery stages before delivery events)."""

    arm: str
    assigned: int
    eligible: int | None
    sent: int | None
    delivered: int | None
    engaged: int | None
    counted: int
    converted: float | None
    counted_sent: int | None = None
    converted_sent: float | None = None


class Funnel(_Model):
    """assigned -> eligible -> sent -> delivered -> opened/clicked -> converted, per arm.
    ``converted`` is intent-to-treat (every counted customer of the arm, the headline);
    ``converted_sent`` is per-protocol (only customers sent a message)."""

    metric: str
    kind: MetricKind
    arms: list[FunnelArm]
    delivery_events: bool


class HoldoutMetric(_Model):
    """One metric, every treated customer pooled against the global holdout, by ``method``."""

    name: str
    kind: MetricKind
    treated: ArmMetricStats
    holdout: ArmMetricStats
    abs_lift: float | None
    ci: Interval | None
    rel_lift: float | None
    p_value: float | None
    significant: bool
    status: ComparisonStatus


class HoldoutComparison(_Model):
    """The whole retention programme's effect: customers treated (assigned to an arm that sends
    messages or offers) against the global holdout (never treated by any experiment), on the
    experiment's metrics and the retention metrics. In the index, pooled over ``experiments``."""

    treated_arms: list[str]
    holdout_arm: str
    method: Literal["fixed", "sequential"]
    alpha: float
    metrics: list[HoldoutMetric]
    experiments: list[str] = []


class Provenance(_Model):
    """Where the numbers come from: the spec as run, its hash, the data's cut-off, the software."""

    spec_yaml: str | None
    spec_hash: str | None
    owner: str | None
    data_cutoff: str
    retain_version: str


class Report(_Model):
    experiment: str
    hypothesis: str
    computed_at: str
    as_of: str
    alpha: float
    baseline: str
    arms: list[ArmSummary]
    srm: SrmSummary
    metrics: list[MetricReport]
    analysis: AnalysisSummary | None = None
    survival: SurvivalReport | None = None
    balance: list[BalanceRow] | None = None
    verdict: Verdict | None = None
    trust: Trust | None = None
    lift_over_time: LiftOverTime | None = None
    funnel: Funnel | None = None
    provenance: Provenance | None = None
    currency: str | None = None
    holdout: HoldoutComparison | None = None
