"""Shared fixtures. Database tests run on SQLite by default and on PostgreSQL when
``RETAIN_DATABASE_URL`` points at one: each test gets a fresh, migrated database (a copied SQLite
file, or a PostgreSQL database cloned from a migrated template)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

# Keep Prefect quiet and on 127.0.0.1 (see INTEGRATIONS.md); must happen before prefect is imported.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
# The demo's per-install link key goes to a temporary folder, not the developer's home.
os.environ.setdefault("RETAIN_STATE_DIR", tempfile.mkdtemp(prefix="retain-test-state-"))

from models.db import dispose_engine, make_engine
from models.migrate import upgrade

DATABASE_URL = os.environ.get("RETAIN_DATABASE_URL", "")
ON_POSTGRES = make_url(DATABASE_URL).get_backend_name() == "postgresql" if DATABASE_URL else False


def _admin_engine() -> Engine:
    return create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database to clone: a SQLite file path or a PostgreSQL database name."""
    if ON_POSTGRES:
        name = f"retain_tpl_{uuid.uuid4().hex[:10]}"
        admin = _admin_engine()
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as error:  # pragma: no cover - environment problem
            pytest.exit(f"PostgreSQL at {make_url(DATABASE_URL)!r} is not usable: {error}", 2)
        engine = make_engine(_pg_url(name))
        upgrade(engine)
        engine.dispose()
        yield name
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        yield str(path)


@pytest.fixture
def database_url(
    migrated_template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """URL of a fresh, migrated, empty database for one test, also set as RETAIN_DATABASE_URL
    (flows take no database parameter: they read it from the environment)."""
    if ON_POSTGRES:
        name = f"retain_t_{uuid.uuid4().hex[:12]}"
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"'))
        monkeypatch.setenv("RETAIN_DATABASE_URL", _pg_url(name))
        yield _pg_url(name)
        dispose_engine(_pg_url(name))
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path / "retain.db"
        shutil.copy(migrated_template, path)
        monkeypatch.setenv("RETAIN_DATABASE_URL", f"sqlite:///{path}")
        yield f"sqlite:///{path}"
        dispose_engine(f"sqlite:///{path}")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One local Prefect API for the whole session (it takes seconds to start), with the flow
    heartbeat off so each flow run is fast (INTEGRATIONS.md)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A loaded machine (CI shares two cores) can take longer than the default 30 s to start it.
    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
