"""Alembic environment: the engine is handed in by models.migrate (or built from the URL)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import models.assign_records
import models.customer_data
import models.records  # noqa: F401  (register the tables on SQLModel.metadata)
from models.db import make_engine

target_metadata = SQLModel.metadata
config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine") or make_engine()
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
