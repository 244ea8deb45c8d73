"""Date arithmetic that compiles on both SQLite and PostgreSQL.

Timestamps are timezone-aware UTC in Python (SQLModel's ``UTCDateTime``); SQLite stores them as
ISO text without an offset, so arithmetic goes through ``julianday`` there and through intervals on
PostgreSQL, whose sessions run in UTC (see :func:`models.db.make_engine`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class days_between(FunctionElement[float]):
    """``later - earlier`` in (fractional) days; NULL if either side is NULL."""

    type = Float()
    inherit_cache = True

    def __init__(self, later: Any, earlier: Any) -> None:
        super().__init__(later, earlier)


@compiles(days_between, "sqlite")
def _days_between_sqlite(element: days_between, compiler: Any, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    return f"(julianday({compiler.process(later, **kw)}) - julianday({compiler.process(earlier, **kw)}))"


@compiles(days_between, "postgresql")
def _days_between_pg(element: days_between, compiler: Any, **kw: Any) -> str:
    later, earlier = list(element.clauses)
    # date_part is double precision; EXTRACT returns numeric since PostgreSQL 14, and numeric
    # arithmetic on every joined row made the evaluation's queries several times slower.
    return (
        f"(date_part('epoch', {compiler.process(later, **kw)} - "
        f"{compiler.process(earlier, **kw)}) / 86400.0)"
    )


class add_days(FunctionElement[Any]):
    """``timestamp + days`` (days may be a column or a number)."""

    inherit_cache = True

    def __init__(self, timestamp: ColumnElement[Any], days: Any) -> None:
        super().__init__(timestamp, days)


@compiles(add_days, "sqlite")
def _add_days_sqlite(element: add_days, compiler: Any, **kw: Any) -> str:
    ts, days = list(element.clauses)
    return (
        f"strftime('%Y-%m-%d %H:%M:%f', julianday({compiler.process(ts, **kw)}) "
        f"+ {compiler.process(days, **kw)})"
    )


@compiles(add_days, "postgresql")
def _add_days_pg(element: add_days, compiler: Any, **kw: Any) -> str:
    ts, days = list(element.clauses)
    return (
        f"({compiler.process(ts, **kw)} + make_interval(secs => "
        f"CAST({compiler.process(days, **kw)} AS DOUBLE PRECISION) * 86400.0))"
    )


class epoch_day(FunctionElement[int]):
    """The UTC calendar day of a timestamp (after 1970) as whole days since 1970-01-01."""

    type = Integer()
    inherit_cache = True

    def __init__(self, timestamp: Any) -> None:
        super().__init__(timestamp)


@compiles(epoch_day, "sqlite")
def _epoch_day_sqlite(element: epoch_day, compiler: Any, **kw: Any) -> str:
    # Days since the epoch are julianday - 2440587.5, exact at midnight; CAST truncates, which is
    # the floor for any timestamp after 1970 (one date parse per row, not two).
    (ts,) = list(element.clauses)
    return f"CAST(julianday({compiler.process(ts, **kw)}) - 2440587.5 AS INTEGER)"


@compiles(epoch_day, "postgresql")
def _epoch_day_pg(element: epoch_day, compiler: Any, **kw: Any) -> str:
    (ts,) = list(element.clauses)
    return f"(CAST({compiler.process(ts, **kw)} AS DATE) - DATE '1970-01-01')"
