"""Where a flow's heavy batches run: Prefect's thread pool in the flow's process (the default), or a
Dask cluster (``prefect-dask``), chosen by the environment of the process that runs the flows (the
``retain`` command, the ``retain deploy`` server, or a worker):

====================  =============================================================================
``RETAIN_TASK_RUNNER``  ``threads`` (default) or ``dask``
``RETAIN_DASK_ADDRESS`` a running scheduler, e.g. ``tcp://10.0.0.5:8786`` (its workers need Retain
                        installed and ``RETAIN_DATABASE_URL`` set); unset: a local cluster per run
``RETAIN_DASK_WORKERS`` workers of that local cluster (threads in this process; default 2)
====================  =============================================================================

The task runner only changes where the work happens: the tasks and their order are the same, so a
flow gives the same result on either (tests check it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


class RunnerSettings(BaseSettings):
    """``RETAIN_TASK_RUNNER``, ``RETAIN_DASK_ADDRESS``, ``RETAIN_DASK_WORKERS``."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore", frozen=True)

    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1, le=64)


class RunnerError(ValueError):
    """A task-runner setting that cannot be used; the message says how to fix it."""


def task_runner(settings: RunnerSettings | None = None) -> TaskRunner[Any]:
    """The task runner the settings (default: the environment) ask for."""
    try:
        chosen = settings or RunnerSettings()
    except ValueError as error:
        raise RunnerError(f"task runner settings: {' '.join(str(error).split())}") from None
    if chosen.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RunnerError(
            "RETAIN_TASK_RUNNER=dask needs prefect-dask: pip install 'retain[dask]' "
            "(or unset RETAIN_TASK_RUNNER for the thread pool)"
        ) from None
    if chosen.dask_address:
        return DaskTaskRunner(address=chosen.dask_address)
    # Threads, not processes: a local cluster is for trying Dask out; spread real work with a
    # scheduler and workers on other machines (RETAIN_DASK_ADDRESS).
    return DaskTaskRunner(cluster_kwargs={"n_workers": chosen.dask_workers, "processes": False})
