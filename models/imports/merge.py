"""Staged rows into the customer tables in bulk: a temporary staging table filled with PostgreSQL
``COPY`` (SQLite: ``executemany``), then set-based checks (duplicate ids, unknown parents) and one
merge per table: ``INSERT … SELECT … ON CONFLICT (external_id) DO UPDATE … WHERE`` something
changed. Everything runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    case,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from models.bulk import foreign_keys_deferred, secondary_indexes_deferred, table
from models.customer_data import Customer
from models.imports.convert import Reject
from models.imports.entities import ENTITIES, Entity
from models.records import Suppression

_TYPES: dict[str, Any] = {
    "int": BigInteger,
    "amount": BigInteger,
    "bool": Boolean,
}


@dataclass(frozen=True)
class MergeCounts:
    rows: int
    inserted: int
    updated: int
    unchanged: int
    suppressions: int = 0


WORK_MEM = "256MB"


def create_stage(connection: Connection, entity: Entity, extra: tuple[str, ...] = ()) -> Table:
    """A temporary table for ``entity``'s staged columns (plus ``line``)."""
    pg = connection.dialect.name == "postgresql"
    # PostgreSQL: microseconds since 1970, UTC (see from_epoch_us); SQLite: the stored text, made
    # by pyarrow's cast in write_stage (formatting a million times in SQL costs seconds).
    timestamp: Any = BigInteger if pg else Text
    columns = [Column("line", Integer)]
    for field in entity.fields:
        kind = timestamp if field.kind == "timestamp" else _TYPES.get(field.kind, Text)
        columns.append(Column(field.name, kind))
    if entity.name == "payment_methods":
        date_type: Any = Date if pg else Text
        columns.append(Column("expires_on", date_type))
    columns.extend(Column(name, timestamp) for name in extra)
    name = f"stage_{entity.name}"
    if not pg:
        # Staging and resolved rows in memory: no temp files for a million rows (~100 MB each).
        connection.exec_driver_sql("PRAGMA temp_store = MEMORY")
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {'' if pg else 'temp.'}{name}")
    stage = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])
    stage.info["timestamps"] = [
        *(f.name for f in entity.fields if f.kind == "timestamp"),
        *extra,
    ]
    stage.create(connection)
    if pg:
        connection.exec_driver_sql("SET LOCAL timezone = 'UTC'")
        # The resolve joins a million staged rows to the target and the parents: hash tables in
        # memory, not spilled to temporary files in batches (the default is 4 MB; this
        # transaction only, per hash table, allocated only as needed).
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{WORK_MEM}'")
    return stage


SQLITE_ROWS = 25_000  # rows turned into Python tuples at a time for SQLite's executemany


def write_stage(connection: Connection, stage: Table, rows: pa.Table) -> None:
    """Append ``rows`` (columns named as the stage's) to the staging table in bulk."""
    if rows.num_rows == 0:
        return
    names = [c.name for c in stage.columns if c.name in rows.column_names]
    rows = rows.select(names)
    column_list = ", ".join(names)
    if connection.dialect.name == "postgresql":
        buffer = io.BytesIO()
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False))
        raw = connection.connection.driver_connection
        assert raw is not None
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {stage.name} ({column_list}) FROM STDIN (FORMAT csv)") as copy,
        ):
            copy.write(buffer.getvalue())
        return
    for name in stage.info["timestamps"]:
        if name in names:
            # ``YYYY-MM-DD HH:MM:SS.ffffff``: the text SQLAlchemy stores a datetime as on SQLite.
            position = rows.column_names.index(name)
            text = pc.cast(pc.cast(rows.column(name), pa.timestamp("us")), pa.string())
            rows = rows.set_column(position, name, text)
    marks = ", ".join("?" * len(names))
    insert_rows = f"INSERT INTO temp.{stage.name} ({column_list}) VALUES ({marks})"
    for start in range(0, rows.num_rows, SQLITE_ROWS):  # bounded memory: Python rows per slice
        part = rows.slice(start, SQLITE_ROWS)
        values = list(zip(*(column.to_pylist() for column in part.columns), strict=True))
        connection.exec_driver_sql(insert_rows, values)


def reject_duplicates(connection: Connection, stage: Table) -> list[Reject]:
    """Reject every row whose id appears more than once in the source (which one is right is
    unknowable), and drop them from the stage."""
    key = stage.c.external_id
    repeated = select(key).where(key.is_not(None)).group_by(key).having(func.count() > 1)
    rows = connection.execute(
        select(stage.c.line, key).where(key.in_(repeated)).order_by(key, stage.c.line)
    ).all()
    if not rows:
        return []
    lines: dict[str, list[int]] = {}
    for line, value in rows:
        lines.setdefault(value, []).append(line)
    connection.execute(stage.delete().where(key.in_(repeated)))
    return [
        Reject(
            line,
            "external_id",
            value,
            "duplicate id (or, without ids, an identical row) in this file (lines "
            + ", ".join(map(str, lines[value][:5]))
            + "); export each record once",
        )
        for line, value in rows
    ]


def merge(
    connection: Connection, stage: Table, entity: Entity, now: datetime, mapped: set[str]
) -> tuple[MergeCounts, list[Reject]]:
    """Upsert the staged rows into the entity's table by ``external_id``; count what changed.

    One pass resolves the staged rows (their parents' ids, whether they exist and whether
    anything differs) and keeps the new and changed ones in a temporary table; rows whose parent is unknown are rejected; then only new and
    changed rows are merged. New rows get every column (defaults for unmapped fields: no consent,
    say); existing rows only the ``mapped`` fields, so a file without a consent column never
    revokes consent given elsewhere.
    """
    target = entity.table
    updatable = _updatable(entity, mapped)
    if connection.dialect.name == "postgresql":
        # Planner statistics for the fresh stage (a sample), so the joins below are hash joins.
        connection.exec_driver_sql(f"ANALYZE {stage.name}")
    staged = connection.execute(select(func.count()).select_from(stage)).scalar_one()
    resolved, refs = _resolve(connection, stage, entity, updatable)
    rejects = _unknown_parents(connection, resolved, refs)
    new, changed = connection.execute(
        select(
            func.count() - func.count(resolved.c.target_id),
            func.coalesce(func.sum(resolved.c.changed), 0),
        )
    ).one()
    rows = staged - len({reject.line for reject in rejects})
    existing = rows - new

    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    names = [c.name for c in resolved.c if c.name in target.c]
    columns: list[Any] = [resolved.c[name] for name in names]
    if "updated_at" in target.c:
        names.append("updated_at")
        columns.append(literal(now, target.c.updated_at.type).label("updated_at"))
    versioned = "source_updated_at" in resolved.c

    def upsert(wanted: ColumnElement[bool]) -> Any:
        statement = module.insert(target).from_select(names, select(*columns).where(wanted))
        excluded = statement.excluded
        kept = (*updatable, "updated_at", "source_updated_at")
        assignments: dict[str, Any] = {name: excluded[name] for name in names if name in kept}
        if entity.name == "subscriptions":
            assignments.update(_plan_history(target, excluded))
        return statement.on_conflict_do_update(
            index_elements=["external_id"],
            set_=assignments,
            where=and_(
                or_(*(target.c[n].is_distinct_from(excluded[n]) for n in names if n in updatable)),
                _newer(excluded.source_updated_at, target) if versioned else true(),
            ),
        )

    is_new = resolved.c.target_id.is_(None)
    if changed:
        # Existing rows that differ: one UPDATE … FROM joined on the resolved ids (re-checking the
        # change, should another writer have got there first).
        kept = (*updatable, "updated_at", "source_updated_at")
        values: dict[str, Any] = {
            name: expr for name, expr in zip(names, columns, strict=True) if name in kept
        }
        if entity.name == "subscriptions":
            incoming = SimpleNamespace(
                plan=resolved.c.plan,
                billing_interval=resolved.c.billing_interval,
                updated_at=values["updated_at"],
            )
            values.update(_plan_history(target, incoming))
        connection.execute(
            update(target)
            .where(
                target.c.id == resolved.c.target_id,
                resolved.c.changed == 1,
                or_(
                    *(target.c[n].is_distinct_from(resolved.c[n]) for n in names if n in updatable)
                ),
                _newer(resolved.c.source_updated_at, target) if versioned else true(),
            )
            .values(values)
        )
    if new and _worth_deferring(connection, target, new):
        # A bulk load: the new rows with a plain INSERT while the target's plain indexes, foreign
        # keys and (PostgreSQL) unique id index are dropped; they are built again, and checked, in
        # one pass each before the commit.
        with ExitStack() as deferred:
            deferred.enter_context(secondary_indexes_deferred(connection, [target.name]))
            deferred.enter_context(foreign_keys_deferred(connection, [target.name]))
            deferred.enter_context(_unique_id_deferred(connection, target))
            connection.execute(insert(target).from_select(names, select(*columns).where(is_new)))
    elif new:
        # New rows through the upsert: a row another writer inserted meanwhile is updated instead.
        connection.execute(upsert(is_new))
    resolved.drop(connection)
    added = _suppressions(connection, stage, now) if entity.name == "customers" else 0
    counts = MergeCounts(rows, new, int(changed), existing - int(changed), added)
    return counts, rejects


# Inserting at least this many rows, and at least as many as the table holds, drops the target's
# plain indexes and (PostgreSQL) foreign keys for the insert and builds them again after: one sort
# per index and one join per key instead of a B-tree insert and a trigger per row. The rows' parents
# were resolved by the same transaction, so re-adding the keys cannot fail on them.
DEFER_INDEXES_ROWS = 50_000


def _worth_deferring(connection: Connection, target: Table, new: int) -> bool:
    if new < DEFER_INDEXES_ROWS:
        return False
    stored = connection.execute(select(func.count()).select_from(target)).scalar_one()
    return new >= stored


@contextmanager
def _unique_id_deferred(connection: Connection, target: Table) -> Iterator[None]:
    """PostgreSQL: the unique constraint on ``external_id`` dropped, and added back (one sort, and
    the check that no id repeats) at the end. The staged ids are distinct and new, so it holds."""
    if connection.dialect.name != "postgresql":
        yield
        return
    keys = [
        key["name"]
        for key in inspect(connection).get_unique_constraints(target.name)
        if key["column_names"] == ["external_id"] and key["name"]
    ]
    quote = connection.dialect.identifier_preparer.quote
    for key in keys:
        connection.exec_driver_sql(f"ALTER TABLE {quote(target.name)} DROP CONSTRAINT {quote(key)}")
    yield
    for key in keys:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(target.name)} ADD CONSTRAINT {quote(key)} UNIQUE (external_id)"
        )


def _resolve(
    connection: Connection, stage: Table, entity: Entity, updatable: set[str]
) -> tuple[Table, list[tuple[str, str, str]]]:
    """The staged rows as target columns, plus ``target_id`` and ``changed``, in a temp table."""
    pg = connection.dialect.name == "postgresql"
    target = entity.table.alias("t")
    out: list[Column[Any]] = [
        Column("line", Integer),
        Column("target_id", Integer),
        Column("changed", Integer),
    ]
    exprs: list[Any] = []
    refs: list[tuple[str, str, str]] = []  # (ref column, id column, parent entity)
    parent_ids: list[tuple[str, Any]] = []
    from_clause: Any = stage
    for c in stage.columns:
        field = entity.field(c.name)
        if c.name == "line" or (field is not None and field.stage_only and field.kind != "ref"):
            continue
        if field is not None and field.kind == "ref" and field.refers_to is not None:
            parent = ENTITIES[field.refers_to].table.alias(f"p_{c.name}")
            from_clause = from_clause.join(parent, parent.c.external_id == c, isouter=True)
            out += [Column(f"{c.name}_ref", Text), Column(f"{c.name}_id", Integer)]
            exprs += [c, parent.c.id]
            refs.append((f"{c.name}_ref", f"{c.name}_id", field.refers_to))
            parent_ids.append((f"{c.name}_ref", parent.c.id))
        elif c.name not in entity.table.c:
            continue
        elif c.name == "source_updated_at" or (field is not None and field.kind == "timestamp"):
            stored = entity.table.c[c.name].type
            out.append(Column(c.name, stored if pg else Text))
            exprs.append(from_epoch_us(c, stored) if pg else c)
        else:
            out.append(Column(c.name, c.type))
            exprs.append(c)
    values = dict(zip([col.name for col in out[3:]], exprs, strict=True))
    from_clause = from_clause.join(
        target, target.c.external_id == stage.c.external_id, isouter=True
    )
    differs: ColumnElement[bool] = or_(
        *(target.c[n].is_distinct_from(values[n]) for n in values if n in updatable)
    )
    if "source_updated_at" in values:
        differs = and_(differs, _newer(values["source_updated_at"], target))
    changed = case((target.c.id.is_(None), 0), (differs, 1), else_=0)
    # Only rows that need something are kept: new ones, changed ones, and those whose parent is
    # unknown (to reject). Re-importing an unchanged file writes nothing here.
    unknown = [
        and_(stage.c[ref.removesuffix("_ref")].is_not(None), values_id.is_(None))
        for ref, values_id in parent_ids
    ]
    wanted = or_(target.c.id.is_(None), differs, *unknown)
    name = f"resolved_{entity.name}"
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {'' if pg else 'temp.'}{name}")
    resolved = Table(name, MetaData(), *out, prefixes=["TEMPORARY"])
    resolved.create(connection)
    query = (
        select(stage.c.line, target.c.id, changed, *exprs).select_from(from_clause).where(wanted)
    )
    connection.execute(resolved.insert().from_select([col.name for col in out], query))
    return resolved, refs


def _unknown_parents(
    connection: Connection, resolved: Table, refs: list[tuple[str, str, str]]
) -> list[Reject]:
    """Reject rows whose customer (or subscription) is not in Retain; drop them."""
    rejects: list[Reject] = []
    for ref, id_, parent in refs:
        unknown = and_(resolved.c[ref].is_not(None), resolved.c[id_].is_(None))
        rows = connection.execute(select(resolved.c.line, resolved.c[ref]).where(unknown)).all()
        if rows:
            connection.execute(resolved.delete().where(unknown))
            rejects.extend(
                Reject(
                    line,
                    ref.removesuffix("_ref"),
                    value,
                    f"no {parent[:-1].replace('_', ' ')} with this id in Retain; "
                    f"import the {parent} file first",
                )
                for line, value in rows
            )
    return rejects


def _updatable(entity: Entity, mapped: set[str]) -> set[str]:
    """Target columns an update may change: the mapped fields' (a parent's id for a reference)."""
    columns = set()
    for name in mapped:
        field = entity.field(name)
        if field is None or name == "external_id":
            continue
        if field.kind == "ref":
            columns.add(f"{name}_id")
        elif not field.stage_only:
            columns.add(name)
    if {"exp_month", "exp_year"} & columns:
        columns.add("expires_on")
    return columns


def _newer(incoming: Any, target: Any) -> ColumnElement[bool]:
    """The incoming row is not older than the stored one (an event delivered late loses)."""
    return or_(
        incoming.is_(None),
        target.c.source_updated_at.is_(None),
        incoming >= target.c.source_updated_at,
    )


class from_epoch_us(FunctionElement[Any]):
    """Microseconds since 1970 as the stored timestamp: on SQLite the text SQLAlchemy writes
    (``YYYY-MM-DD HH:MM:SS.ffffff``), on PostgreSQL a ``timestamptz``. Converting in SQL keeps a
    million timestamps out of Python's (and pyarrow's slower) string formatting."""

    inherit_cache = True

    def __init__(self, micros: Any, type_: Any) -> None:
        super().__init__(micros)
        self.type = type_


@compiles(from_epoch_us, "sqlite")
def _from_epoch_us_sqlite(element: from_epoch_us, compiler: Any, **kw: Any) -> str:
    x = compiler.process(next(iter(element.clauses)), **kw)
    frac = f"((({x}) % 1000000 + 1000000) % 1000000)"
    return (
        f"(datetime((({x}) - {frac}) / 1000000, 'unixepoch')"
        f" || '.' || substr('00000' || {frac}, -6))"
    )


@compiles(from_epoch_us, "postgresql")
def _from_epoch_us_pg(element: from_epoch_us, compiler: Any, **kw: Any) -> str:
    x = compiler.process(next(iter(element.clauses)), **kw)
    return f"(TIMESTAMPTZ 'epoch' + ({x}) * INTERVAL '1 microsecond')"


def _plan_history(target: Table, excluded: Any) -> dict[str, Any]:
    """A changed plan or interval keeps the old plan, MRR and interval, and when it changed."""
    moved = or_(
        target.c.plan.is_distinct_from(excluded.plan),
        target.c.billing_interval.is_distinct_from(excluded.billing_interval),
    )
    return {
        "previous_plan": case((moved, target.c.plan), else_=target.c.previous_plan),
        "previous_mrr_cents": case((moved, target.c.mrr_cents), else_=target.c.previous_mrr_cents),
        "previous_billing_interval": case(
            (moved, target.c.billing_interval), else_=target.c.previous_billing_interval
        ),
        "plan_changed_at": case((moved, excluded.updated_at), else_=target.c.plan_changed_at),
    }


def _suppressions(connection: Connection, stage: Table, now: datetime) -> int:
    """Unsubscribes in the source become suppressions (kept even if a later file drops the flag)."""
    customers = table(Customer)
    suppressions = table(Suppression)
    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    added = 0
    for channel in ("email", "sms"):
        flag = stage.c[f"{channel}_unsubscribed"]
        rows = (
            select(
                customers.c.id,
                literal(channel).label("channel"),
                literal("unsubscribed").label("reason"),
                literal("import").label("source"),
                literal(now, suppressions.c.created_at.type).label("created_at"),
            )
            .select_from(stage.join(customers, customers.c.external_id == stage.c.external_id))
            .where(flag.is_(True))
        )
        statement = (
            module.insert(suppressions)
            .from_select(["customer_id", "channel", "reason", "source", "created_at"], rows)
            .on_conflict_do_nothing(index_elements=["customer_id", "channel"])
            .returning(suppressions.c.id)
        )
        added += len(connection.execute(statement).all())
    return added
