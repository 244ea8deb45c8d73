"""The optional Dask task runner: chosen by RETAIN_TASK_RUNNER, and a flow run on a local Dask
cluster enrols exactly the customers, arms, buckets and messages the default thread pool does."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from sqlalchemy import select, text
from sqlalchemy.engine import Engine, make_url

from flows.runners import RunnerError, RunnerSettings, task_runner
from models.db import dispose_engine, make_engine
from models.records import Assignment, Message
from tests import conftest
from tests.dbdata import T0, add_customers
from tests.test_deploy import SPEC


def test_the_setting_picks_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(task_runner(RunnerSettings()), ThreadPoolTaskRunner)
    remote = task_runner(RunnerSettings(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    local = task_runner(RunnerSettings(task_runner="dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 3, "processes": False}
    monkeypatch.setenv("RETAIN_TASK_RUNNER", "spark")
    with pytest.raises(RunnerError) as caught:
        task_runner()
    assert "task_runner" in str(caught.value) and "\n" not in str(caught.value)


@contextmanager
def _copy_of(database_url: str, engine: Engine) -> Iterator[str]:
    """A second database holding what ``database_url`` holds now."""
    engine.dispose()
    dispose_engine(database_url)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        copy = path.with_name(f"copy-{path.name}")
        shutil.copy(path, copy)
        yield f"sqlite:///{copy}"
        dispose_engine(f"sqlite:///{copy}")
        return
    name = f"retain_t_{uuid.uuid4().hex[:12]}"
    admin = conftest._admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"'))
    try:
        yield conftest._pg_url(name)
    finally:
        dispose_engine(conftest._pg_url(name))
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _enrolled(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        assignments = conn.execute(
            select(Assignment.customer_id, Assignment.arm, Assignment.bucket).order_by(  # type: ignore[call-overload]
                Assignment.customer_id
            )
        ).all()
        messages = conn.execute(
            select(Message.idempotency_key, Message.scheduled_at, Message.shadow).order_by(  # type: ignore[call-overload]
                Message.idempotency_key
            )
        ).all()
    engine.dispose()
    return [tuple(a) for a in assignments], [tuple(m) for m in messages]


@pytest.mark.slow
@pytest.mark.prefect
def test_a_flow_on_dask_enrols_exactly_as_on_threads(
    prefect_api: None,
    engine: Engine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.pipeline import run_experiment

    add_customers(engine, 60, card_days=20)
    spec = tmp_path / "reminder.yaml"
    spec.write_text(SPEC)
    with _copy_of(database_url, engine) as other:
        on_threads = run_experiment(str(spec), as_of=T0)
        dask = task_runner(RunnerSettings(task_runner="dask", dask_workers=2))
        monkeypatch.setenv("RETAIN_DATABASE_URL", other)
        on_dask = run_experiment.with_options(task_runner=dask)(str(spec), as_of=T0)
        assert on_dask.newly_assigned == on_threads.newly_assigned == 60
        assert on_dask.by_arm == on_threads.by_arm
        assert on_dask.messages_scheduled == on_threads.messages_scheduled > 0
        assert on_dask.checks.srm_p_value == on_threads.checks.srm_p_value
        assert _enrolled(other) == _enrolled(database_url)
