"""The Alembic migrations create exactly the schema the SQLModel tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import models.assign_records
import models.customer_data
import models.records  # noqa: F401
from models.migrate import current_revision, head_revision, is_up_to_date, upgrade


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        drift = compare_metadata(context, SQLModel.metadata)
    assert drift == [], f"models and migrations differ; add a migration: {drift}"


def test_upgrade_is_idempotent_and_at_head(engine: Engine) -> None:
    assert is_up_to_date(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"customers", "assignments", "messages", "experiment_snapshots"} <= tables
