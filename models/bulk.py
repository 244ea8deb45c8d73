"""Bulk writes: chunked inserts that skip rows violating a unique key (``ON CONFLICT DO
NOTHING``), and the driver-level bulk load used for seeding (``executemany`` / ``COPY``).

The unique keys are the platform's guarantees (one assignment per customer and experiment, one
outbox row per idempotency key); inserting through them makes every write safe to repeat.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
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


# --- Bulk loading through the driver (seeding) ---------------------------------------------------

Column = Sequence[Any]


def next_ids(connection: Connection, table_name: str) -> int:
    """The first free id of ``table_name`` (1 for an empty table)."""
    statement = text(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {_quoted(connection, table_name)}")
    return int(connection.execute(statement).scalar_one())


def python_columns(dialect: str, columns: dict[str, np.ndarray[Any, Any]]) -> dict[str, Column]:
    """numpy columns as the values the driver stores, exactly as the SQLAlchemy types would.

    Timestamps (``datetime64[s]``, UTC) become text: ``YYYY-MM-DD HH:MM:SS.000000`` on SQLite
    (SQLAlchemy's storage format, compared as strings there), ``... HH:MM:SS+00`` for
    PostgreSQL's ``COPY``; dates ``YYYY-MM-DD``; ``NaT`` None; booleans 0/1 on SQLite.
    """
    sqlite_ = dialect == "sqlite"
    out: dict[str, Column] = {}
    for name, values in columns.items():
        if values.dtype.kind == "M" and np.datetime_data(values.dtype)[0] == "D":
            out[name] = format_times(values, b"", date_only=True)
        elif values.dtype.kind == "M":
            out[name] = format_times(values, b".000000" if sqlite_ else b"+00")
        elif values.dtype.kind == "b" and sqlite_:
            out[name] = values.astype(np.int64).tolist()
        else:
            out[name] = values.tolist()
    return out


def format_times(values: np.ndarray[Any, Any], suffix: bytes, *, date_only: bool = False) -> Column:
    """Text of UTC ``datetime64`` values, built as bytes in numpy (no Python per value)."""
    seconds = values.astype("datetime64[s]").astype(np.int64)
    missing = np.isnat(values)
    seconds = np.where(missing, 0, seconds)
    days, time_of_day = np.divmod(seconds, 86_400)
    if len(days) == 0:
        return []
    low = int(days[~missing].min()) if (~missing).any() else 0
    calendar = np.arange(low, int(days.max()) + 1).astype("datetime64[D]")
    dates = np.datetime_as_string(calendar).astype("S10").view(np.uint8).reshape(-1, 10)
    width = 10 if date_only else 19 + len(suffix)
    out = np.empty((len(days), width), np.uint8)
    out[:, :10] = dates[np.maximum(days - low, 0)]
    if not date_only:
        out[:, 10] = ord(" ")
        hours, rest = np.divmod(time_of_day, 3_600)
        minutes, secs = np.divmod(rest, 60)
        for col, part in ((11, hours), (14, minutes), (17, secs)):
            out[:, col] = 48 + part // 10
            out[:, col + 1] = 48 + part % 10
        out[:, 13] = out[:, 16] = ord(":")
        out[:, 19:] = np.frombuffer(suffix, np.uint8)
    texts: list[str | None] = out.view(f"S{width}").ravel().astype(f"U{width}").tolist()
    for i in np.flatnonzero(missing).tolist():
        texts[i] = None
    return texts


LOAD_CHUNK = 100_000  # rows converted and sent at once: bounds the Python objects alive


def converted_chunks(
    dialect: str, columns: dict[str, np.ndarray[Any, Any]]
) -> Iterator[dict[str, Column]]:
    """:func:`python_columns` of ``LOAD_CHUNK`` rows at a time."""
    total = len(next(iter(columns.values())))
    for start in range(0, total, LOAD_CHUNK):
        part = {name: values[start : start + LOAD_CHUNK] for name, values in columns.items()}
        yield python_columns(dialect, part)


def bulk_load(connection: Connection, table_name: str, columns: dict[str, Column]) -> None:
    """Append rows (given as equal-length columns of driver values) with the driver's bulk path:
    ``executemany`` of tuples on SQLite, ``COPY ... FROM STDIN`` on PostgreSQL."""
    names = list(columns)
    rows = list(zip(*columns.values(), strict=True))
    if not rows:
        return
    target = _quoted(connection, table_name)
    column_list = ", ".join(names)
    raw: Any = connection.connection.dbapi_connection
    assert raw is not None
    if connection.dialect.name == "postgresql":
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {target} ({column_list}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    elif connection.dialect.name == "sqlite":
        marks = ", ".join("?" * len(names))
        cursor = raw.cursor()
        try:
            cursor.executemany(f"INSERT INTO {target} ({column_list}) VALUES ({marks})", rows)
        finally:
            cursor.close()
    else:
        raise NotImplementedError(f"bulk load is not implemented for {connection.dialect.name}")


@contextmanager
def secondary_indexes_deferred(
    connection: Connection, table_names: Iterable[str]
) -> Iterator[None]:
    """Drop the plain (non-unique, column) indexes of the tables, and create them again at the end.

    Building an index once over loaded rows is a sort; keeping it up to date row by row is a
    random B-tree insert per row (on SQLite about 6x slower for a timestamp index). Unique
    indexes stay: they are constraints. Use inside the loading transaction, so a failure leaves
    the indexes as they were.
    """
    inspector = inspect(connection)
    deferred: list[tuple[str, str, list[str]]] = []
    for name in table_names:
        for index in inspector.get_indexes(name):
            index_name, names = index["name"], list(index["column_names"])
            if index["unique"] or not index_name or any(c is None for c in names):
                continue
            deferred.append((index_name, name, [str(c) for c in names]))
    quote = connection.dialect.identifier_preparer.quote
    for index_name, _, _ in deferred:
        connection.exec_driver_sql(f"DROP INDEX {quote(index_name)}")
    yield
    for index_name, table_name, columns in deferred:
        column_list = ", ".join(quote(c) for c in columns)
        connection.exec_driver_sql(
            f"CREATE INDEX {quote(index_name)} ON {quote(table_name)} ({column_list})"
        )


@contextmanager
def foreign_keys_deferred(connection: Connection, table_names: Iterable[str]) -> Iterator[None]:
    """PostgreSQL: drop the tables' foreign keys while loading and add them back at the end.

    ``COPY`` checks a foreign key with a trigger per row; adding the constraint back validates
    all rows at once with one join (and fails the transaction if any row is orphaned). SQLite
    checks a foreign key with one primary-key lookup in-process, so it keeps them.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    inspector = inspect(connection)
    quote = connection.dialect.identifier_preparer.quote
    keys: list[tuple[str, str, str]] = []
    for name in table_names:
        for key in inspector.get_foreign_keys(name):
            key_name = key["name"]
            if not key_name or key.get("options"):
                continue  # unnamed or with ON DELETE/UPDATE rules: keep it
            local = ", ".join(quote(c) for c in key["constrained_columns"])
            remote = ", ".join(quote(c) for c in key["referred_columns"])
            definition = (
                f"FOREIGN KEY ({local}) REFERENCES {quote(key['referred_table'])} ({remote})"
            )
            keys.append((name, key_name, definition))
    for table_name, key_name, _ in keys:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(table_name)} DROP CONSTRAINT {quote(key_name)}"
        )
    yield
    for table_name, key_name, definition in keys:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(table_name)} ADD CONSTRAINT {quote(key_name)} {definition}"
        )


@contextmanager
def sqlite_cache(connection: Connection, megabytes: int = 256) -> Iterator[None]:
    """A larger SQLite page cache while loading (indexes are built in it); restored after."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{megabytes * 1024}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def reset_sequences(connection: Connection, table_names: Iterable[str]) -> None:
    """After rows with explicit ids: PostgreSQL's id sequences continue after the largest id."""
    if connection.dialect.name != "postgresql":
        return  # SQLite's INTEGER PRIMARY KEY continues after the largest rowid by itself
    for name in table_names:
        connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'),"
                f" COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {name}"
            )
        )


def analyze(bind: Engine | Connection, tables: Sequence[str] = ()) -> None:
    """Refresh the planner's statistics (``ANALYZE``, of ``tables`` or of every table) after bulk
    writes (seeding, imports), on SQLite (sampled, so it stays fast) and PostgreSQL alike, so
    joins over freshly loaded tables get sensible plans. ``bind`` is a connection (inside the
    loading transaction) or an engine (its own transaction)."""
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            analyze(connection, tables)
        return
    connection = bind
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA analysis_limit=1000")
    if not tables:
        connection.exec_driver_sql("ANALYZE")
    for name in tables:
        connection.exec_driver_sql(f"ANALYZE {_quoted(connection, name)}")


def _quoted(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)
