"""The primary metric's per-arm sufficient statistics by the day they became countable, for the
report's lift-over-time chart.

A customer's metric counts once its window has ended (``models.metric_sql``): a customer assigned
``o`` days after the experiment's first assignment, on a metric with a ``w``-day window, is counted
from day ``ceil(o + w)`` on, and their value is final from then (only events inside the window
count). So the report as it would have read on day ``d`` holds exactly the customers counted by
day ``d``: cumulative sums over this function's rows. One grouped query; no per-customer row
reaches Python.

This reads the assignments directly. When stored daily per-arm aggregates exist, this module is
the one place to switch to them: :func:`daily_statistics` keeps its signature.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from experiments.metrics import CATALOGUE
from experiments.spec import Costs
from experiments.stats import SampleStats
from models.metric_sql import ASSIGNMENTS, Window, customer_values, experiment_rows
from models.sqltime import days_between


class _ceil_int(FunctionElement[int]):
    """``ceil(x)`` as an integer, on SQLite builds without the math functions too."""

    type = Integer()
    inherit_cache = True


@compiles(_ceil_int, "sqlite")
def _ceil_int_sqlite(element: _ceil_int, compiler: Any, **kw: Any) -> str:
    # CAST truncates toward zero; add 1 for positive non-integers to round up instead.
    (arg,) = element.clauses
    x = compiler.process(arg, **kw)
    return f"(CAST({x} AS INTEGER) + (CAST({x} AS INTEGER) < {x}))"


@compiles(_ceil_int, "postgresql")
def _ceil_int_pg(element: _ceil_int, compiler: Any, **kw: Any) -> str:
    (arg,) = element.clauses
    return f"CAST(CEIL({compiler.process(arg, **kw)}) AS INTEGER)"


def daily_statistics(
    engine: Engine, experiment_id: int, metric: str, as_of: datetime, costs: Costs | None = None
) -> tuple[datetime | None, dict[str, dict[int, SampleStats]]]:
    """The first assignment's time, and per arm and day since it, the sufficient statistics of the
    customers of ``metric`` who became countable that day (not cumulative), as of ``as_of``."""
    window = Window(as_of=as_of, days=CATALOGUE[metric].window_days, costs=costs or Costs())
    a = ASSIGNMENTS
    start = (
        select(func.min(a.c.assigned_at))
        .where(a.c.experiment_id == experiment_id)
        .scalar_subquery()
    )
    mature = experiment_rows(experiment_id, as_of, window.days)
    values = customer_values(metric, window, mature).subquery("values")
    countable = _ceil_int(days_between(values.c.assigned_at, start) + window.days)
    per_customer = select(
        values.c.arm.label("arm"), countable.label("day"), values.c.y.label("v")
    ).subquery()
    v = per_customer.c.v
    query = select(
        per_customer.c.arm,
        per_customer.c.day,
        func.count(),
        func.coalesce(func.sum(v), 0.0),
        func.coalesce(func.sum(v * v), 0.0),
    ).group_by(per_customer.c.arm, per_customer.c.day)
    first = select(func.min(a.c.assigned_at)).where(a.c.experiment_id == experiment_id)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        started = connection.execute(first).scalar_one_or_none()
    by_arm: dict[str, dict[int, SampleStats]] = defaultdict(dict)
    for arm, day, n, total, squares in rows:
        by_arm[arm][int(day)] = SampleStats(int(n), float(total), float(squares))
    return started, dict(by_arm)
