"""Staged rows into the customer tables in bulk: a temporary staging table filled with PostgreSQL
``COPY`` (SQLite: ``executemany``), then set-based checks (duplicate ids, unknown parents) and one
merge per table: ``INSERT … SELECT … ON CONFLICT (external_id) DO UPDATE … WHERE`` something
changed. Everything runs on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from models.bulk import table
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


def create_stage(connection: Connection, entity: Entity, extra: tuple[str, ...] = ()) -> Table:
    """A temporary table for ``entity``'s staged columns (plus ``line``)."""
    pg = connection.dialect.name == "postgresql"
    timestamp: Any = DateTime(timezone=True) if pg else Text
    columns = [Column("line", Integer)]
    for field in entity.fields:
        kind = timestamp if field.kind == "timestamp" else _TYPES.get(field.kind, Text)
        columns.append(Column(field.name, kind))
    if entity.name == "payment_methods":
        date_type: Any = Date if pg else Text
        columns.append(Column("expires_on", date_type))
    columns.extend(Column(name, timestamp) for name in extra)
    name = f"stage_{entity.name}"
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {'' if pg else 'temp.'}{name}")
    stage = Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])
    stage.create(connection)
    if pg:
        connection.exec_driver_sql("SET LOCAL timezone = 'UTC'")
    return stage


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
    marks = ", ".join("?" * len(names))
    values = list(zip(*(column.to_pylist() for column in rows.columns), strict=True))
    connection.exec_driver_sql(
        f"INSERT INTO temp.{stage.name} ({column_list}) VALUES ({marks})", values
    )


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
            "duplicate id in this file (lines "
            + ", ".join(map(str, lines[value][:5]))
            + "); export each record once",
        )
        for line, value in rows
    ]


def reject_unknown_parents(connection: Connection, stage: Table, entity: Entity) -> list[Reject]:
    """Reject rows whose customer (or subscription) is not in Retain; drop them from the stage."""
    rejects: list[Reject] = []
    for field in entity.fields:
        if field.kind != "ref" or field.refers_to is None:
            continue
        parent = ENTITIES[field.refers_to].table
        ref = stage.c[field.name]
        unknown = and_(ref.is_not(None), ~exists().where(parent.c.external_id == ref))
        rows = connection.execute(
            select(stage.c.line, ref).where(unknown).order_by(stage.c.line)
        ).all()
        if rows:
            connection.execute(stage.delete().where(unknown))
            rejects.extend(
                Reject(
                    line,
                    field.name,
                    value,
                    f"no {field.refers_to[:-1].replace('_', ' ')} with this id in Retain; "
                    f"import the {field.refers_to} file first",
                )
                for line, value in rows
            )
    return rejects


def merge(
    connection: Connection, stage: Table, entity: Entity, now: datetime, mapped: set[str]
) -> MergeCounts:
    """Upsert the staged rows into the entity's table by ``external_id``; count what changed.

    New rows get every column (defaults for unmapped fields: no consent, say); existing rows only
    the ``mapped`` fields, so a file without a consent column never revokes consent given elsewhere.
    """
    target = entity.table
    source = _source_select(stage, entity, now).subquery("src")
    updatable = _updatable(entity, mapped)
    data = [c for c in source.c if c.name in updatable]
    versioned = "source_updated_at" in source.c
    joined = source.join(target, target.c.external_id == source.c.external_id)
    rows = connection.execute(select(func.count()).select_from(source)).scalar_one()
    existing = connection.execute(select(func.count()).select_from(joined)).scalar_one()
    changed = connection.execute(
        select(func.count())
        .select_from(joined)
        .where(
            or_(*(target.c[c.name].is_distinct_from(c) for c in data)),
            _newer(source.c, target) if versioned else true(),
        )
    ).scalar_one()

    module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    names = [c.name for c in source.c]
    statement = module.insert(target).from_select(names, select(source).where(true()))
    excluded = statement.excluded
    kept = (*updatable, "updated_at", "source_updated_at")
    assignments: dict[str, Any] = {c.name: excluded[c.name] for c in source.c if c.name in kept}
    if entity.name == "subscriptions":
        assignments.update(_plan_history(target, excluded))
    statement = statement.on_conflict_do_update(
        index_elements=["external_id"],
        set_=assignments,
        where=and_(
            or_(*(target.c[c.name].is_distinct_from(excluded[c.name]) for c in data)),
            _newer(excluded, target) if versioned else true(),
        ),
    )
    connection.execute(statement)
    added = _suppressions(connection, stage, now) if entity.name == "customers" else 0
    return MergeCounts(rows, rows - existing, changed, existing - changed, added)


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


def _newer(incoming: Any, target: Table) -> ColumnElement[bool]:
    """The incoming row is not older than the stored one (an event delivered late loses)."""
    return or_(
        incoming.source_updated_at.is_(None),
        target.c.source_updated_at.is_(None),
        incoming.source_updated_at >= target.c.source_updated_at,
    )


def _source_select(stage: Table, entity: Entity, now: datetime) -> Any:
    """The staged rows as the target table's columns: parents' ids looked up by source id."""
    target = entity.table
    columns: list[Any] = []
    joins: list[tuple[Any, Any, bool]] = []
    for c in stage.columns:
        if c.name == "line":
            continue
        field = entity.field(c.name)
        if field is not None and field.kind == "ref" and field.refers_to is not None:
            parent = ENTITIES[field.refers_to].table.alias(f"p_{field.name}")
            joins.append((parent, parent.c.external_id == c, not field.required))
            columns.append(parent.c.id.label(f"{field.name}_id"))
        elif field is not None and field.stage_only:
            continue
        elif c.name in target.c:
            columns.append(c.label(c.name))
    if "updated_at" in target.c:
        columns.append(literal(now, target.c.updated_at.type).label("updated_at"))
    query = select(*columns)
    from_clause: Any = stage
    for parent, condition, outer in joins:
        from_clause = from_clause.join(parent, condition, isouter=outer)
    return query.select_from(from_clause)


def _plan_history(target: Table, excluded: Any) -> dict[str, Any]:
    """A changed plan or interval keeps the old plan, MRR and interval, and when it changed."""
    from sqlalchemy import case

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
