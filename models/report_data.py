"""The facts a report needs beyond the per-arm statistics, from the database: assignments per arm,
the customers' currency, the segment's daily inflow, the spec as run, the funnel, the primary
metric's stored daily series (:mod:`models.lift_series`), the per-stratum sample-ratio checks of
the last assignment run, the data's freshness (imports, Stripe syncs and webhooks) and the
treated customers' statistics against the global holdout's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import except_, exists, func, select
from sqlalchemy.engine import Engine

from experiments.assignment import HOLDOUT_ARM
from experiments.report.enrich import HoldoutInputs, ReportContext, funnel_metric
from experiments.report.holdout import RETENTION_METRICS
from experiments.report.models import Report, StratumSrm
from experiments.rules import parse_rule
from experiments.spec import ExperimentSpec
from models.arm_decisions import report_stops
from models.assign_records import AssignmentCheck
from models.bulk import table
from models.customer_data import Customer
from models.daily_aggregates import metric_statistics
from models.funnel import funnel_counts, sent_statistics
from models.imports.tables import ImportRun, StripeEvent, SyncCursor
from models.lift_series import stored_series
from models.metric_sql import ASSIGNMENTS
from models.moments import Moments, total
from models.records import Experiment, ExperimentSnapshot
from models.segments import segment_query

INFLOW_DAYS = 7


def currency_of(engine: Engine, experiment_id: int) -> str:
    """The currency most of the experiment's customers are billed in (USD when none)."""
    a, c = ASSIGNMENTS, table(Customer)
    query = (
        select(c.c.currency, func.count())
        .join(a, a.c.customer_id == c.c.id)
        .where(a.c.experiment_id == experiment_id)
        .group_by(c.c.currency)
        .order_by(func.count().desc(), c.c.currency)
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return str(row[0]) if row is not None and row[0] else "USD"


def segment_inflow(engine: Engine, spec: ExperimentSpec, as_of: datetime) -> float:
    """Customers entering the segment per day over the last week: in it now and not a week ago
    (as ``retain plan`` counts them), counted in SQL."""
    rule = parse_rule(spec.segment.where)
    now = segment_query(rule, as_of).order_by(None)
    before = segment_query(rule, as_of - timedelta(days=INFLOW_DAYS)).order_by(None)
    entered = except_(now, before).subquery("entered")
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(entered)).scalar_one()
    return int(count) / INFLOW_DAYS


def spec_as_run(engine: Engine, experiment_id: int) -> tuple[str | None, str | None]:
    """The YAML of the experiment's current snapshot and its sha256."""
    e, snap = table(Experiment), table(ExperimentSnapshot)
    query = (
        select(snap.c.spec_yaml, e.c.spec_hash)
        .join(snap, (snap.c.experiment_id == e.c.id) & (snap.c.spec_hash == e.c.spec_hash))
        .where(e.c.id == experiment_id)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return (None, None) if row is None else (str(row[0]), str(row[1]))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def stratum_srm(engine: Engine, experiment_id: int) -> tuple[list[StratumSrm], datetime | None]:
    """The per-stratum sample-ratio checks of the experiment's last assignment run (stored in
    ``assignment_checks`` by :mod:`models.assign_checks`), and when they ran."""
    c = table(AssignmentCheck)
    mine = (c.c.experiment_id == experiment_id, c.c.check == "srm_stratum")
    latest = select(func.max(c.c.checked_at)).where(*mine).scalar_subquery()
    query = (
        select(c.c.scope, c.c.p_value, c.c.flagged, c.c.detail, c.c.checked_at)
        .where(*mine, c.c.checked_at == latest)
        .order_by(c.c.scope)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    strata = [
        StratumSrm(
            stratum=str(scope),
            counts={str(arm): int(n) for arm, n in json.loads(detail).get("counts", {}).items()},
            p_value=None if p is None else float(p),
            ok=not flagged,
        )
        for scope, p, flagged, detail, _at in rows
    ]
    return strata, _utc(rows[0][4]) if rows else None


@dataclass(frozen=True)
class Freshness:
    """The latest import, Stripe sync or webhook (``source`` says which), and, for data loaded
    without any, the newest customer's creation time."""

    last_at: datetime | None
    source: str | None
    newest_customer: datetime | None


def data_freshness(engine: Engine) -> Freshness:
    """When the customer data last came in through an import run, a Stripe sync or webhook."""
    runs, cursors, events = table(ImportRun), table(SyncCursor), table(StripeEvent)
    candidates: list[tuple[datetime, str]] = []
    with engine.connect() as connection:
        run = connection.execute(
            select(runs.c.finished_at, runs.c.entity)
            .where(runs.c.status == "applied")
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
        if run is not None:
            candidates.append((_utc(run[0]), f"import ({run[1]})"))
        sync = connection.execute(
            select(cursors.c.updated_at, cursors.c.source, cursors.c.resource)
            .order_by(cursors.c.updated_at.desc(), cursors.c.id.desc())
            .limit(1)
        ).first()
        if sync is not None:
            candidates.append((_utc(sync[0]), f"{sync[1].capitalize()} sync ({sync[2]})"))
        event = connection.execute(select(func.max(events.c.received_at))).scalar()
        if event is not None:
            candidates.append((_utc(event), "Stripe webhook"))
        newest = None
        if not candidates:
            newest = connection.execute(select(func.max(table(Customer).c.created_at))).scalar()
    if not candidates:
        return Freshness(None, None, None if newest is None else _utc(newest))
    at, source = max(candidates, key=lambda c: c[0])
    return Freshness(at, source, None)


def treated_arms(spec: ExperimentSpec) -> list[str]:
    """The arms that treat their customers: they send messages or grant an offer."""
    return [arm.name for arm in spec.arms if arm.steps or arm.offer is not None]


def holdout_inputs(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    as_of: datetime,
    moments: Mapping[str, Mapping[str, Moments]],
) -> HoldoutInputs | None:
    """Per metric, every treated customer's statistics against the global holdout arm's: the
    spec's metrics from the evaluation's ``moments`` (every arm, the holdout included), then the
    retention metrics from the stored daily aggregates. ``None`` when the experiment has no
    holdout customer or no treated arm."""
    treated = treated_arms(spec)
    a = ASSIGNMENTS
    held = select(exists().where(a.c.experiment_id == experiment_id, a.c.arm == HOLDOUT_ARM))
    with engine.connect() as connection:
        if not treated or not connection.execute(held).scalar():
            return None
    arms = [*(arm.name for arm in spec.arms), HOLDOUT_ARM]
    stats = {}
    for name in [*moments, *(m for m in RETENTION_METRICS if m not in moments)]:
        per_arm = moments.get(name)
        if per_arm is None:
            per_arm = metric_statistics(
                engine, experiment_id, name, as_of, arms, costs=spec.analysis.costs
            )
        t = total([per_arm[arm] for arm in treated if arm in per_arm]).sample()
        h = per_arm.get(HOLDOUT_ARM, Moments(0)).sample()
        stats[name] = (t, h)
    return HoldoutInputs(treated_arms=treated, holdout_arm=HOLDOUT_ARM, stats=stats)


def report_context(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    report: Report,
    as_of: datetime,
    *,
    moments: Mapping[str, Mapping[str, Moments]] | None = None,
) -> ReportContext:
    """Everything :func:`experiments.report.enrich.enrich` needs about this experiment;
    ``moments``: the evaluation's per-arm moments of each metric, every arm included."""
    costs = spec.analysis.costs
    funnel = funnel_counts(engine, experiment_id)
    metric = funnel_metric(report)
    sent = (
        sent_statistics(engine, experiment_id, metric.name, as_of, costs)
        if metric is not None
        else None
    )
    series = stored_series(engine, experiment_id, spec.metrics.primary, as_of)
    strata, strata_at = stratum_srm(engine, experiment_id)
    fresh = data_freshness(engine)
    yaml_text, spec_hash = spec_as_run(engine, experiment_id)
    return ReportContext(
        as_of=as_of,
        # The spec's arms only: the global holdout's customers are never counted in its metrics.
        assigned={arm.name: funnel[arm.name].assigned for arm in spec.arms if arm.name in funnel},
        currency=currency_of(engine, experiment_id),
        mde=spec.analysis.mde,
        power=spec.analysis.power,
        inflow_per_day=segment_inflow(engine, spec, as_of),
        owner=spec.owner,
        spec_yaml=yaml_text,
        spec_hash=spec_hash,
        lift_series=series.points,
        started_at=series.started_at,
        funnel=funnel,
        sent_stats=sent,
        auto_stops=report_stops(engine, experiment_id, spec),
        srm_strata=strata,
        srm_strata_checked_at=strata_at,
        last_import_at=fresh.last_at,
        last_import_source=fresh.source,
        newest_customer=fresh.newest_customer,
        holdout=holdout_inputs(engine, experiment_id, spec, as_of, moments or {}),
    )


def experiment_list(engine: Engine) -> list[tuple[str, str, str]]:
    """Every experiment's key, status and hypothesis, by key."""
    e = table(Experiment)
    query = select(e.c.key, e.c.status, e.c.hypothesis).order_by(e.c.key)
    with engine.connect() as connection:
        return [(str(k), str(s), str(h)) for k, s, h in connection.execute(query)]
