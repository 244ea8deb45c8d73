"""Chunked bulk inserts that skip rows violating a unique key (``ON CONFLICT DO NOTHING``).

The unique keys are the platform's guarantees (one assignment per customer and experiment, one
outbox row per idempotency key); inserting through them makes every write safe to repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

CHUNK = 5_000


def table(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel class, for bulk statements."""
    mapper = inspect(model)
    assert mapper is not None, f"{model.__name__} is not a table"
    return cast(Table, mapper.local_table)


def insert_ignoring_conflicts(
    connection: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Iterable[str],
) -> int:
    """Insert ``rows``, skipping any that collide on ``conflict_columns``; returns rows inserted."""
    columns = list(conflict_columns)
    dialect = connection.dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"bulk insert is not implemented for {dialect}")
    inserted = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        statement = (
            module.insert(table)
            .on_conflict_do_nothing(index_elements=columns)
            .returning(*table.primary_key.columns)
        )
        # RETURNING yields only the rows really inserted (rowcount is unreliable for batches).
        inserted += len(connection.execute(statement, list(chunk)).all())
    return inserted
