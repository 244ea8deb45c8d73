"""Add what a person acts on to a built report: the verdict, the trust checks, the lift over time,
the funnel and the provenance. Pure: :mod:`models.report_data` gathers the facts from the database
into a :class:`ReportContext`, this module turns them into the report's sections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import metadata

from experiments.metrics import CATALOGUE
from experiments.report.direction import primary_metric
from experiments.report.holdout import holdout_comparison
from experiments.report.models import (
    AutoStopDecision,
    Funnel,
    FunnelArm,
    MetricReport,
    Provenance,
    Report,
    StratumSrm,
)
from experiments.report.numbers import fmt_mde, is_money
from experiments.report.timeline import CumulativePoint, lift_over_time, sample_of, with_latest
from experiments.report.trust import trust
from experiments.report.verdict import decide, sample_needed
from experiments.stats import SampleStats
from experiments.stats.sequential import SequentialSettings


@dataclass(frozen=True)
class FunnelCounts:
    """Customers of one arm at each messaging stage (``None``: no records for the stage yet)."""

    assigned: int
    eligible: int | None
    sent: int | None
    delivered: int | None
    engaged: int | None


@dataclass(frozen=True)
class HoldoutInputs:
    """Per metric, the (treated, holdout) statistics, and which arms are the treated ones."""

    treated_arms: Sequence[str]
    holdout_arm: str
    stats: Mapping[str, tuple[SampleStats, SampleStats]]


@dataclass(frozen=True)
class ReportContext:
    """Facts about the experiment beyond the per-arm statistics (all from the database)."""

    as_of: datetime
    assigned: Mapping[str, int]
    currency: str = "USD"
    mde: float | None = None
    power: float = 0.8
    inflow_per_day: float | None = None
    owner: str | None = None
    spec_yaml: str | None = None
    spec_hash: str | None = None
    last_import_at: datetime | None = None
    last_import_source: str | None = None
    newest_customer: datetime | None = None
    srm_strata: Sequence[StratumSrm] = ()
    srm_strata_checked_at: datetime | None = None
    auto_stops: Sequence[AutoStopDecision] = ()
    lift_series: Sequence[CumulativePoint] | None = None
    started_at: datetime | None = None
    funnel: Mapping[str, FunnelCounts] | None = None
    sent_stats: Mapping[str, SampleStats] | None = None
    holdout: HoldoutInputs | None = None


def retain_version() -> str:
    """The installed Retain's version (``unknown`` when run from an uninstalled checkout)."""
    try:
        return metadata.version("retain")
    except metadata.PackageNotFoundError:
        return "unknown"


def _utc_day(at: datetime) -> date:
    return (at if at.tzinfo is None else at.astimezone(UTC)).date()


def funnel_metric(report: Report) -> MetricReport | None:
    """The metric the funnel ends in: the primary when binary, else the binary secondary metric
    with the shortest window (a pricing offer judged on revenue converts by accepting the offer)."""
    primary = primary_metric(report)
    if primary is not None and primary.kind == "binary":
        return primary
    binary = [m for m in report.metrics if m.kind == "binary" and m.role == "secondary"]
    window = {name: d.window_days for name, d in CATALOGUE.items()}
    return min(binary, key=lambda m: window.get(m.name, 10**6), default=primary)


def _funnel(report: Report, ctx: ReportContext) -> Funnel | None:
    metric = funnel_metric(report)
    if metric is None or ctx.funnel is None:
        return None
    binary = metric.kind == "binary"
    arms = []
    for a in metric.arms:
        counts = ctx.funnel.get(a.name, FunnelCounts(ctx.assigned.get(a.name, 0), *([None] * 4)))
        sent = (ctx.sent_stats or {}).get(a.name)
        per_protocol = counts.sent is not None and sent is not None
        arms.append(
            FunnelArm(
                arm=a.name,
                assigned=counts.assigned,
                eligible=counts.eligible,
                sent=counts.sent,
                delivered=counts.delivered,
                engaged=counts.engaged,
                counted=a.n,
                converted=a.sum if binary else None,
                counted_sent=sent.n if per_protocol and sent else None,
                converted_sent=sent.sum if per_protocol and sent and binary else None,
            )
        )
    delivery = any(a.delivered is not None for a in arms)
    return Funnel(metric=metric.name, kind=metric.kind, arms=arms, delivery_events=delivery)


def enrich(report: Report, ctx: ReportContext) -> Report:
    """``report`` with its verdict, trust checks, lift over time, funnel and provenance."""
    primary = primary_metric(report)
    if primary is None:
        return report
    verdict = decide(
        report,
        mde=ctx.mde,
        power=ctx.power,
        inflow_per_day=ctx.inflow_per_day,
        currency=ctx.currency,
    )
    money = ctx.currency if is_money(primary.name) else None
    mde_text = None if ctx.mde is None else fmt_mde(ctx.mde, primary.kind, money)
    checks = trust(
        report,
        as_of=ctx.as_of,
        assigned=sum(ctx.assigned.values()),
        mde_text=mde_text,
        n_needed=sample_needed(report, ctx.mde, ctx.power),
        strata=ctx.srm_strata,
        strata_checked_at=ctx.srm_strata_checked_at,
        stops=ctx.auto_stops,
        last_import_at=ctx.last_import_at,
        last_import_source=ctx.last_import_source,
        newest_customer=ctx.newest_customer,
    )
    tuning = report.analysis.sequential_tuning_n if report.analysis else 5_000
    timeline = None
    if ctx.lift_series is not None:
        points = list(ctx.lift_series)
        if ctx.started_at is not None:
            today = (_utc_day(ctx.as_of) - _utc_day(ctx.started_at)).days
            points = with_latest(points, today, {a.name: sample_of(a) for a in primary.arms})
        timeline = lift_over_time(
            primary.name,
            primary.kind,
            report.baseline,
            [a.name for a in report.arms],
            points,
            ctx.started_at,
            SequentialSettings(tuning_n=tuning, alpha=report.alpha),
        )
    holdout = None
    if ctx.holdout is not None and ctx.holdout.stats:
        holdout = holdout_comparison(
            ctx.holdout.stats,
            ctx.holdout.treated_arms,
            ctx.holdout.holdout_arm,
            report.analysis.method if report.analysis else "fixed",
            report.alpha,
            tuning,
        )
    provenance = Provenance(
        spec_yaml=ctx.spec_yaml,
        spec_hash=ctx.spec_hash,
        owner=ctx.owner,
        data_cutoff=ctx.as_of.isoformat(),
        retain_version=retain_version(),
    )
    return report.model_copy(
        update={
            "verdict": verdict,
            "trust": checks,
            "lift_over_time": timeline,
            "funnel": _funnel(report, ctx),
            "provenance": provenance,
            "currency": ctx.currency,
            "holdout": holdout,
        }
    )
