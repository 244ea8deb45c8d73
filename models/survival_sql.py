"""Time to churn per arm, aggregated in SQL into per-day counts of events and censorings.

For each assigned customer, time is counted in whole days from ``assigned_at``; day ``d`` is the
interval ``[assigned_at + d days, assigned_at + (d + 1) days)``. The customer is followed for
``w = min(floor(days from assigned_at to as_of), horizon_days)`` whole days — the days that have
fully elapsed by ``as_of``, capped at the horizon:

- **event on day d**: the earliest ``Subscription.canceled_at`` at or after ``assigned_at`` (any
  of the customer's subscriptions; cancellations before assignment are ignored) falls on a day
  ``d < w``;
- **censored on day w − 1** otherwise: the customer was seen to survive days ``0 .. w - 1``, the
  last one being day ``w - 1``. Under the Kaplan–Meier tie convention of
  :mod:`experiments.survival` (events before censorings) that keeps them in the risk set of every
  day they were fully observed, and of no later day. A customer assigned exactly 10 days before
  ``as_of`` is therefore censored on day 9 (at risk on days 0–9), never counted as retained to
  the horizon; a customer who survives the whole horizon is censored on day ``horizon_days - 1``.
- A cancellation on the day still in progress at ``as_of`` (day ``w`` when ``w < horizon_days``)
  is not counted yet: counting it while that day's survivors are censored on ``w - 1`` would
  inflate that day's hazard, and counting the survivors as at risk on a day not yet over would
  deflate it. It becomes an event at the next evaluation.
- Customers assigned less than one whole day before ``as_of`` (``w = 0``) carry no information
  yet and are left out, as are customers assigned after ``as_of``.

The database returns one row per arm, day and event flag; no per-customer row reaches Python.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, case, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from experiments.survival import SurvivalCounts
from models.customer_data import Subscription
from models.records import Assignment
from models.sqltime import days_between


class _floor_int(FunctionElement[int]):
    """``floor(x)`` as an integer, on SQLite builds without the math functions too."""

    type = Integer()
    inherit_cache = True


@compiles(_floor_int, "sqlite")
def _floor_int_sqlite(element: _floor_int, compiler: Any, **kw: Any) -> str:
    # CAST truncates toward zero; subtract 1 for negative non-integers to floor instead.
    (arg,) = element.clauses
    x = compiler.process(arg, **kw)
    return f"(CAST({x} AS INTEGER) - (CAST({x} AS INTEGER) > {x}))"


@compiles(_floor_int, "postgresql")
def _floor_int_pg(element: _floor_int, compiler: Any, **kw: Any) -> str:
    # CAST alone would round on PostgreSQL, so floor first.
    (arg,) = element.clauses
    return f"CAST(FLOOR({compiler.process(arg, **kw)}) AS INTEGER)"


def _whole_days(later: Any, earlier: Any) -> ColumnElement[int]:
    return _floor_int(days_between(later, earlier))


def survival_counts(
    engine: Engine, experiment_id: int, as_of: datetime, horizon_days: int = 90
) -> dict[str, SurvivalCounts]:
    """Per arm, the number of customers who churned and who were censored on each day.

    See the module docstring for the definition of the time, the censoring and the edge cases.
    Arms with no customer followed for a whole day yet are absent from the result.
    """
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 1:
        raise ValueError(f"horizon_days must be a whole number >= 1, got {horizon_days!r}")
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (UTC), got naive {as_of!r}")
    a = Assignment.__table__.alias("a")  # type: ignore[attr-defined]
    sub = Subscription.__table__  # type: ignore[attr-defined]
    first_cancel = (
        select(func.min(sub.c.canceled_at))
        .where(sub.c.customer_id == a.c.customer_id, sub.c.canceled_at >= a.c.assigned_at)
        .scalar_subquery()
    )
    base = (
        select(
            a.c.arm.label("arm"),
            _whole_days(literal(as_of, a.c.assigned_at.type), a.c.assigned_at).label("elapsed"),
            _whole_days(first_cancel, a.c.assigned_at).label("churn_day"),
        )
        .where(a.c.experiment_id == experiment_id)
        .subquery()
    )
    followed = case((base.c.elapsed < horizon_days, base.c.elapsed), else_=literal(horizon_days))
    is_event = and_(base.c.churn_day.is_not(None), base.c.churn_day < followed)
    per_customer = (
        select(
            base.c.arm.label("arm"),
            case((is_event, base.c.churn_day), else_=followed - 1).label("day"),
            case((is_event, 1), else_=0).label("event"),
        )
        .where(base.c.elapsed >= 1)
        .subquery()
    )
    query = (
        select(per_customer.c.arm, per_customer.c.day, per_customer.c.event, func.count())
        .group_by(per_customer.c.arm, per_customer.c.day, per_customer.c.event)
        .order_by(per_customer.c.arm, per_customer.c.day)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    tallies: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for arm, day, event, count in rows:
        tallies[arm][int(day)][0 if event else 1] += int(count)
    return {
        arm: SurvivalCounts(
            days=tuple(sorted(by_day)),
            events=tuple(by_day[d][0] for d in sorted(by_day)),
            censored=tuple(by_day[d][1] for d in sorted(by_day)),
        )
        for arm, by_day in tallies.items()
    }
