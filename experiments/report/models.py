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
