"""Scheduled syncs, so segments see fresh data: the Stripe API sync and, optionally, files a
warehouse drops in a folder (e.g. a nightly product-events export), as a Prefect flow with an
hourly deployment. The flow only orchestrates; the work is in ``models.imports``.

Serve the deployment with ``python -m flows.sync`` (or ``prefect deploy`` with ``entrypoint:
flows/sync.py:sync_customers``). The Stripe key comes from the environment or a Prefect Secret
block (see :mod:`models.imports.settings`), never from a parameter.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, serve, task
from prefect.cache_policies import NONE
from prefect.deployments.runner import RunnerDeployment
from pydantic import BaseModel, ConfigDict

from flows.runners import task_runner
from models.db import engine_for
from models.imports.mapping import load_mapping
from models.imports.run import ImportSummary, import_file
from models.imports.settings import ImportSettings
from models.imports.stripe_sync import SyncSummary, sync_stripe

HOURLY = "0 * * * *"


class FileImport(BaseModel):
    """A file to import on every run and its mapping (a path or a shipped mapping's name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    mapping: str


@task(cache_policy=NONE, retries=2, retry_delay_seconds=60)
def stripe_sync() -> SyncSummary:
    return sync_stripe(engine_for(), ImportSettings())


@task(cache_policy=NONE)
def file_import(item: FileImport) -> ImportSummary:
    return import_file(engine_for(), Path(item.path), load_mapping(item.mapping))


@flow(name="sync-customers", task_runner=task_runner())
def sync_customers(
    stripe: bool = True, files: list[FileImport] | None = None
) -> list[ImportSummary]:
    """Pull Stripe's changes since the last run, then import ``files`` (each in one transaction)."""
    logger = get_run_logger()
    summaries: list[ImportSummary] = []
    if stripe:
        synced = stripe_sync()
        summaries += synced.imports
        logger.info("stripe: %d change events, cursors %s", synced.events, synced.cursors)
    for item in files or []:  # in order, on the task runner (a Dask cluster if so configured)
        summaries.append(file_import.submit(item).result())
    for s in summaries:
        logger.info(
            "%s → %s: %d inserted, %d updated, %d unchanged, %d rejected",
            s.source,
            s.entity,
            s.inserted,
            s.updated,
            s.unchanged,
            s.rejected,
        )
    return summaries


def hourly_deployment(
    cron: str = HOURLY, files: list[FileImport] | None = None
) -> RunnerDeployment:
    """The deployment that runs :func:`sync_customers` every hour (UTC)."""
    deployment = sync_customers.to_deployment(
        name="hourly",
        cron=cron,
        parameters={"files": [f.model_dump() for f in files or []]},
        description="Stripe changes and dropped files into Retain's customer tables, hourly.",
    )
    assert isinstance(deployment, RunnerDeployment)  # the synchronous variant
    return deployment


if __name__ == "__main__":  # pragma: no cover - a long-running server
    serve(hourly_deployment())
