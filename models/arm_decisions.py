"""Auto-stop in the database: the ``arm_decisions`` table, recording decisions idempotently, and
the arms stopped now (what assignment, scheduling and dispatch read).

The YAML is the people's source of truth (an arm's ``status``); this table holds the automated
decisions, each with the numbers it was taken on. What is decided is pure
(:mod:`experiments.autostop`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import UniqueConstraint, func, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel

from experiments.autostop import StopDecision, decide_stops, srm_of_running_arms, stopped_arms
from experiments.report.models import AutoStopDecision, Report
from experiments.spec import ExperimentSpec
from models.bulk import insert_ignoring_conflicts, table
from models.records import Assignment, Experiment

STOP = "stop"


class ArmDecision(SQLModel, table=True):
    """An automatic decision about one arm (``action``: ``stop``), taken once: re-evaluating
    records nothing new. ``reason``: ``guardrail_harm``, ``primary_harm`` or ``winner``; the
    comparison that decided it is ``compared_arm`` against ``baseline`` on ``metric`` (the
    winner's, for a winner stop) by the always-valid test (``method``), with ``p_value`` adjusted
    for the family's multiple comparisons."""

    __tablename__ = "arm_decisions"
    __table_args__ = (UniqueConstraint("experiment_id", "arm", "action"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    arm: str = Field(max_length=64)
    action: str = Field(max_length=16)
    reason: str = Field(max_length=32)
    metric: str = Field(max_length=64)
    compared_arm: str = Field(max_length=64)
    baseline: str = Field(max_length=64)
    abs_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    method: str = Field(max_length=100)
    n_arm: int
    n_baseline: int
    as_of: datetime
    decided_at: datetime
    spec_hash: str | None = Field(default=None, max_length=64)


def recorded_stops(connection: Connection, experiment_ids: Iterable[int]) -> dict[int, set[str]]:
    """The arms with a recorded stop, per experiment (every id given has an entry)."""
    ids = sorted(set(experiment_ids))
    d = table(ArmDecision)
    found: dict[int, set[str]] = {eid: set() for eid in ids}
    if not ids:
        return found
    query = select(d.c.experiment_id, d.c.arm).where(d.c.experiment_id.in_(ids), d.c.action == STOP)
    for eid, arm in connection.execute(query):
        found[int(eid)].add(str(arm))
    return found


def stopped_now(connection: Connection, experiment_id: int, spec: ExperimentSpec) -> frozenset[str]:
    """The arms of the experiment stopped now: the YAML's ``status`` over recorded decisions."""
    return stopped_arms(spec, recorded_stops(connection, [experiment_id])[experiment_id])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def days_running(connection: Connection, experiment_id: int, as_of: datetime) -> float | None:
    """Days from the experiment's first assignment to ``as_of`` (None before any)."""
    a = table(Assignment)
    first = connection.execute(
        select(func.min(a.c.assigned_at)).where(a.c.experiment_id == experiment_id)
    ).scalar_one()
    if first is None:
        return None
    if isinstance(first, str):  # SQLite returns MIN() of a datetime column as text
        first = datetime.fromisoformat(first)
    return (_aware(as_of) - _aware(first)).total_seconds() / 86_400


def auto_stop(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    report: Report,
    as_of: datetime,
    now: datetime,
) -> tuple[Report, list[StopDecision]]:
    """Take and record the stops ``report`` calls for; returns the report with the sample-ratio
    check over the arms still enrolling (:func:`experiments.autostop.srm_of_running_arms`) and
    the decisions recorded by this call (none when they were recorded before)."""
    e = table(Experiment)
    with engine.begin() as connection:
        stopped = stopped_now(connection, experiment_id, spec)
        report = srm_of_running_arms(report, stopped)
        decisions = decide_stops(
            report,
            spec,
            stopped=stopped,
            days_running=days_running(connection, experiment_id, as_of),
        )
        spec_hash = connection.execute(
            select(e.c.spec_hash).where(e.c.id == experiment_id)
        ).scalar_one_or_none()
        rows = [_row(experiment_id, d, as_of, now, spec_hash) for d in decisions]
        d = table(ArmDecision)
        new = set()
        for row in rows:  # one by one: RETURNING tells which were new
            if insert_ignoring_conflicts(connection, d, [row], ["experiment_id", "arm", "action"]):
                new.add(row["arm"])
    return report, [x for x in decisions if x.arm in new]


def _row(
    experiment_id: int, d: StopDecision, as_of: datetime, now: datetime, spec_hash: str | None
) -> dict[str, object]:
    return {
        "experiment_id": experiment_id,
        "arm": d.arm,
        "action": STOP,
        "reason": d.reason,
        "metric": d.metric,
        "compared_arm": d.compared_arm,
        "baseline": d.baseline,
        "abs_lift": d.abs_lift,
        "ci_low": d.ci[0] if d.ci else None,
        "ci_high": d.ci[1] if d.ci else None,
        "p_value": d.p_value,
        "method": d.method,
        "n_arm": d.n_arm,
        "n_baseline": d.n_baseline,
        "as_of": as_of,
        "decided_at": now,
        "spec_hash": spec_hash,
    }


def report_stops(
    engine: Engine, experiment_id: int, spec: ExperimentSpec
) -> Sequence[AutoStopDecision]:
    """The recorded decisions as the report shows them, oldest first; ``in_effect`` is false for
    an arm a person resumed in the YAML (``status: running``)."""
    d = table(ArmDecision)
    query = select(d).where(d.c.experiment_id == experiment_id).order_by(d.c.decided_at, d.c.id)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    status = {arm.name: arm.status for arm in spec.arms}
    stops = []
    for row in rows:
        decision = StopDecision(
            arm=row["arm"],
            reason=row["reason"],
            metric=row["metric"],
            compared_arm=row["compared_arm"],
            baseline=row["baseline"],
            abs_lift=row["abs_lift"],
            ci=None if row["ci_low"] is None else (row["ci_low"], row["ci_high"]),
            p_value=row["p_value"],
            method=row["method"],
            n_arm=row["n_arm"],
            n_baseline=row["n_baseline"],
        )
        stops.append(
            AutoStopDecision(
                decided_at=_aware(row["decided_at"]).isoformat(),
                arm=decision.arm,
                action="stopped",
                reason=decision.sentence(),
                kind=decision.reason,
                metric=decision.metric,
                compared_arm=decision.compared_arm,
                baseline=decision.baseline,
                abs_lift=decision.abs_lift,
                ci=decision.ci,
                p_value=decision.p_value,
                method=decision.method,
                as_of=_aware(row["as_of"]).isoformat(),
                in_effect=status.get(decision.arm) != "running",
            )
        )
    return stops
