"""The path of one experiment as Prefect flows. Flows and tasks only orchestrate: every task is a
thin wrapper around a plain function from ``experiments``, ``models`` or ``messaging``.

Every step is recorded in the database behind a unique key, so a flow that is re-run, or crashed
half-way, resumes without re-randomising anyone and without sending any message twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from experiments.holdout import HoldoutError, HoldoutSettings, load_holdout
from experiments.loader import LoadedSpec, load_spec
from experiments.report import Report, write_report
from flows.dispatch_flow import (  # noqa: F401  (prefect.yaml's entrypoint is flows/pipeline.py)
    DispatchIncomplete,
    dispatch,
    dispatch_messages,
)
from flows.runners import task_runner
from messaging.render import template_exists, template_variables
from models.assign import AssignmentError, AssignmentRun, assign_segment
from models.assign_checks import CheckSummary, run_checks
from models.assign_schedule import schedule_messages_sql
from models.db import engine_for
from models.evaluation import evaluate
from models.experiments import Registration, register_experiment, registered_spec


@dataclass(frozen=True)
class RunSummary:
    experiment: str
    experiment_id: int
    segment_size: int
    newly_assigned: int
    by_arm: dict[str, int]
    messages_scheduled: int
    excluded: dict[str, int]
    checks: CheckSummary


def now_utc() -> datetime:
    return datetime.now(UTC)


@task(cache_policy=NONE)
def load_experiment(path: str) -> LoadedSpec:
    return load_spec(path, template_exists, template_variables)


@task(cache_policy=NONE)
def register(loaded: LoadedSpec, now: datetime) -> Registration:
    return register_experiment(engine_for(), loaded, now)


@task(cache_policy=NONE)
def holdout_setting() -> HoldoutSettings:
    try:
        return load_holdout()
    except HoldoutError as error:
        raise AssignmentError(str(error)) from None


@task(cache_policy=NONE)
def select_and_assign(
    loaded: LoadedSpec,
    experiment_id: int,
    as_of: datetime,
    holdout: HoldoutSettings,
) -> AssignmentRun:
    # Set-based: the segment is selected and assigned inside the database; no ids pass through.
    return assign_segment(engine_for(), experiment_id, loaded.spec, as_of, as_of, holdout)


@task(cache_policy=NONE)
def schedule(loaded: LoadedSpec, experiment_id: int, now: datetime) -> int:
    return schedule_messages_sql(engine_for(), experiment_id, loaded.spec, now)


@task(cache_policy=NONE)
def check_assignment(loaded: LoadedSpec, experiment_id: int, now: datetime) -> CheckSummary:
    return run_checks(engine_for(), experiment_id, loaded.spec, now)


@task(cache_policy=NONE)
def registered(key: str) -> tuple[int, LoadedSpec]:
    return registered_spec(engine_for(), key)


@task(cache_policy=NONE)
def evaluate_and_write(
    loaded: LoadedSpec,
    experiment_id: int,
    as_of: datetime,
    out_dir: str,
    planted: Mapping[tuple[str, str], float] | None = None,
) -> Report:
    report = evaluate(engine_for(), experiment_id, loaded.spec, as_of, now_utc(), planted)
    write_report(report, Path(out_dir))
    return report


@task(cache_policy=NONE, retries=2, retry_delay_seconds=[2, 10])
def publish_artifacts(report: Report, out_dir: str) -> list[str]:
    from flows.artifacts import publish

    return publish(report, Path(out_dir))


@flow(name="run-experiment", task_runner=task_runner())
def run_experiment(spec_path: str, as_of: datetime | None = None) -> RunSummary:
    """Validate the experiment file, record it, select its segment, assign new customers to arms
    and schedule their messages. Re-running moves nobody and schedules nothing twice.

    The heavy batches run on the task runner (:mod:`flows.runners`: threads, or a Dask cluster):
    the assignment first, then scheduling and the checks side by side."""
    logger = get_run_logger()
    as_of = as_of or now_utc()
    loaded = load_experiment(spec_path)
    holdout = holdout_setting()
    registration = register(loaded, as_of)
    eid = registration.experiment_id
    assigned = select_and_assign.submit(loaded, eid, as_of, holdout).result()
    scheduling = schedule.submit(loaded, eid, as_of)
    checking = check_assignment.submit(loaded, eid, as_of)
    scheduled, checks = scheduling.result(), checking.result()
    logger.info(
        "%s: %d in segment, %d newly assigned %s, excluded %s, %d messages scheduled;"
        " sample ratio p=%.3g%s",
        loaded.spec.key,
        assigned.segment_size,
        assigned.new,
        assigned.by_arm,
        assigned.excluded,
        scheduled,
        checks.srm_p_value,
        " (MISMATCH)" if checks.srm_flagged else "",
    )
    return RunSummary(
        loaded.spec.key,
        eid,
        assigned.segment_size,
        assigned.new,
        assigned.by_arm,
        scheduled,
        assigned.excluded,
        checks,
    )


@flow(name="evaluate-experiment")
def evaluate_experiment(
    key: str,
    out_dir: str,
    as_of: datetime | None = None,
    planted: dict[str, float] | None = None,
) -> Report:
    """Aggregate the experiment's metrics per arm in SQL, test them and write the report.

    The spec is the snapshot stored when the experiment ran. ``planted`` maps ``"metric/arm"`` to a
    known true effect (the demo's); it is shown next to the estimates."""
    experiment_id, loaded = registered(key)
    truths = {(k.partition("/")[0], k.partition("/")[2]): v for k, v in (planted or {}).items()}
    report = evaluate_and_write(loaded, experiment_id, as_of or now_utc(), out_dir, truths or None)
    publish_artifacts(report, out_dir)
    get_run_logger().info("%s: report written to %s", key, out_dir)
    return report
