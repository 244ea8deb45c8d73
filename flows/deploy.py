"""Deployments from experiment files: each YAML's ``schedule`` becomes three Prefect deployments.

============  ==========================  ===========================================
deployment    flow                        runs
============  ==========================  ===========================================
enrol         ``run-experiment/KEY``      ``schedule.cron``: select, assign, schedule
dispatch      ``dispatch-messages/KEY``   ``schedule.dispatch`` (default every 15 min)
evaluate      ``evaluate-experiment/KEY`` ``schedule.evaluate`` (default 06:00 daily)
============  ==========================  ===========================================

All three use the schedule's IANA ``timezone``. An experiment whose YAML says ``status: paused`` or
``stopped`` gets paused deployments with inactive schedules, so re-deploying after that edit stops
the runs; setting it back to ``running`` and re-deploying resumes them.

:func:`plan_deployments` is pure (what should exist); :func:`apply_deployments` registers or updates
them on the Prefect API in ``PREFECT_API_URL`` and :func:`serve_deployments` also runs them in this
process (``prefect.serve``). No secret is a parameter: flows read the database URL and provider
credentials from the environment or Prefect Secret blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from experiments.loader import LoadedSpec

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

ENROL_FLOW = "run-experiment"
DISPATCH_FLOW = "dispatch-messages"
EVALUATE_FLOW = "evaluate-experiment"


@dataclass(frozen=True)
class PlannedDeployment:
    """One deployment an experiment file asks for."""

    flow_name: str
    name: str
    cron: str
    timezone: str
    active: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    tags: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def plan_deployments(
    loaded: LoadedSpec, spec_path: Path, reports_dir: Path, outbox_dir: Path
) -> list[PlannedDeployment]:
    """The enrol, dispatch and evaluate deployments of one experiment file (paths made absolute,
    because a worker or runner may start in another folder)."""
    spec = loaded.spec
    schedule = spec.schedule
    active = spec.status == "running"
    tags = ("retain", spec.key)
    summary = " ".join(spec.hypothesis.split())[:200]
    return [
        PlannedDeployment(
            ENROL_FLOW,
            spec.key,
            schedule.cron,
            schedule.timezone,
            active,
            {"spec_path": str(spec_path.resolve())},
            f"Enrol customers into {spec.key}: {summary}",
            tags,
        ),
        PlannedDeployment(
            DISPATCH_FLOW,
            spec.key,
            schedule.dispatch,
            schedule.timezone,
            active,
            {"outbox_dir": str(outbox_dir.resolve())},
            f"Send the due messages (every experiment's, each exactly once) for {spec.key}",
            tags,
        ),
        PlannedDeployment(
            EVALUATE_FLOW,
            spec.key,
            schedule.evaluate,
            schedule.timezone,
            active,
            {"key": spec.key, "out_dir": str((reports_dir / spec.key).resolve())},
            f"Evaluate {spec.key} and publish its report",
            tags,
        ),
    ]


def runner_deployments(planned: Sequence[PlannedDeployment]) -> list[RunnerDeployment]:
    """Prefect deployment objects for ``planned`` (imports Prefect)."""
    from prefect.schedules import Cron

    from flows.pipeline import dispatch_messages, evaluate_experiment, run_experiment

    flows: dict[str, Flow[..., Any]] = {
        ENROL_FLOW: run_experiment,
        DISPATCH_FLOW: dispatch_messages,
        EVALUATE_FLOW: evaluate_experiment,
    }
    deployments = []
    for item in planned:
        deployment: RunnerDeployment = flows[item.flow_name].to_deployment(  # type: ignore[assignment]
            name=item.name,
            schedules=[Cron(item.cron, timezone=item.timezone, active=item.active)],
            paused=not item.active,
            parameters=item.parameters,
            description=item.description,
            tags=list(item.tags),
        )
        deployments.append(deployment)
    return deployments


def apply_deployments(planned: Sequence[PlannedDeployment]) -> list[UUID]:
    """Register or update ``planned`` on the Prefect API; returns their ids. Updating replaces
    the schedule, so an edited cron or status takes effect at once."""
    ids: list[UUID] = []
    for deployment in runner_deployments(planned):
        ids.append(deployment.apply())  # type: ignore[arg-type]  # sync outside an event loop
    return ids


def serve_deployments(planned: Sequence[PlannedDeployment], limit: int | None = None) -> None:
    """Register ``planned`` and run their scheduled and triggered runs in this process until it
    is stopped (SIGINT/SIGTERM pause the deployments, as ``prefect.serve`` does, so no late runs
    pile up while nothing serves them)."""
    from prefect import serve

    serve(*runner_deployments(planned), limit=limit, print_starting_message=False)
