"""The facts a report needs beyond the per-arm statistics, from the database: assignments per arm,
the customers' currency, the segment's daily inflow, the spec as run, the funnel and the primary
metric's per-day statistics (:mod:`models.lift_series`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import except_, func, select
from sqlalchemy.engine import Engine

from experiments.report.enrich import ReportContext, funnel_metric
from experiments.report.models import Report
from experiments.rules import parse_rule
from experiments.spec import ExperimentSpec
from models.arm_decisions import report_stops
from models.bulk import table
from models.customer_data import Customer
from models.funnel import funnel_counts, sent_statistics
from models.lift_series import daily_statistics
from models.metric_sql import ASSIGNMENTS
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


def report_context(
    engine: Engine, experiment_id: int, spec: ExperimentSpec, report: Report, as_of: datetime
) -> ReportContext:
    """Everything :func:`experiments.report.enrich.enrich` needs about this experiment."""
    costs = spec.analysis.costs
    funnel = funnel_counts(engine, experiment_id)
    metric = funnel_metric(report)
    sent = (
        sent_statistics(engine, experiment_id, metric.name, as_of, costs)
        if metric is not None
        else None
    )
    started, daily = daily_statistics(engine, experiment_id, spec.metrics.primary, as_of, costs)
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    yaml_text, spec_hash = spec_as_run(engine, experiment_id)
    return ReportContext(
        as_of=as_of,
        assigned={arm: counts.assigned for arm, counts in funnel.items()},
        currency=currency_of(engine, experiment_id),
        mde=spec.analysis.mde,
        power=spec.analysis.power,
        inflow_per_day=segment_inflow(engine, spec, as_of),
        owner=spec.owner,
        spec_yaml=yaml_text,
        spec_hash=spec_hash,
        daily=daily,
        started_at=started,
        funnel=funnel,
        sent_stats=sent,
        auto_stops=report_stops(engine, experiment_id, spec),
    )


def experiment_list(engine: Engine) -> list[tuple[str, str, str]]:
    """Every experiment's key, status and hypothesis, by key."""
    e = table(Experiment)
    query = select(e.c.key, e.c.status, e.c.hypothesis).order_by(e.c.key)
    with engine.connect() as connection:
        return [(str(k), str(s), str(h)) for k, s, h in connection.execute(query)]
