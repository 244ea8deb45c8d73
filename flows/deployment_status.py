"""The next scheduled runs of each experiment's deployments, read from the Prefect server in
``PREFECT_API_URL`` (nothing is started when it is unset: status then shows no schedule)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from flows.deploy import DISPATCH_FLOW, ENROL_FLOW, EVALUATE_FLOW

_LABELS = {ENROL_FLOW: "enrol", DISPATCH_FLOW: "dispatch", EVALUATE_FLOW: "evaluate"}


def next_runs(keys: Sequence[str]) -> dict[str, str]:
    """``{experiment key: "enrol 2026-12-03 08:00 UTC; dispatch …"}`` for experiments that have
    deployments; ``paused`` for a paused one. Empty without a Prefect server."""
    if not os.environ.get("PREFECT_API_URL"):
        return {}
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterTags,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    wanted = set(keys)
    found: dict[str, list[str]] = {}
    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["retain"]))
        )
        flow_names = {flow.id: flow.name for flow in client.read_flows()}
        for deployment in sorted(deployments, key=lambda d: d.name):
            label = _LABELS.get(flow_names.get(deployment.flow_id, ""))
            if deployment.name not in wanted or label is None:
                continue
            if deployment.paused:
                found.setdefault(deployment.name, []).append(f"{label} paused")
                continue
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=1,
            )
            when = runs[0].expected_start_time if runs else None
            found.setdefault(deployment.name, []).append(
                f"{label} {when:%Y-%m-%d %H:%M} UTC" if when else f"{label} not yet scheduled"
            )
    return {key: "; ".join(parts) for key, parts in found.items()}
