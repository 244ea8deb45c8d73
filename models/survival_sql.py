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
  :mod:`experiments.stats.survival` (events before censorings) that keeps them in the risk set of every
  day they were fully observed, and of no later day. A customer assigned exactly 10 days before
  ``as_of`` is therefore censored on day 9 (at risk on days 0–9), never counted as retained to
  the horizon; a customer who survives the whole horizon is censored on day ``horizon_days - 1``.
- A cancellation on the day still in progress at ``as_of`` (day ``w`` when ``w < horizon_days``)
  is not counted yet: counting it while that day's survivors are censored on ``w - 1`` would
  inflate that day's hazard, and counting the survivors as at risk on a day not yet over would
  deflate it. It becomes an event at the next evaluation.
- Customers assigned less than one whole day before ``as_of`` (``w = 0``) carry no information
  yet and are left out, as are customers assigned after ``as_of``.

The database returns one row per arm, assignment day, day and event flag (the assignment day lets
:mod:`models.daily_aggregates` keep the tallies of cohorts followed to the horizon); no
per-customer row reaches Python.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, func, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from experiments.stats.survival import SurvivalCounts
from models.bulk import table
from models.customer_data import Subscription
from models.metric_sql import EPOCH, experiment_rows
from models.records import Assignment
from models.sqltime import days_between, epoch_day


class _trunc_int(FunctionElement[int]):
    """The whole part of ``x >= 0`` as an integer (there it equals the floor), computing ``x``
    once: the per-row date arithmetic is most of these queries' time on SQLite."""

    type = Integer()
    inherit_cache = True


@compiles(_trunc_int, "sqlite")
def _trunc_int_sqlite(element: _trunc_int, compiler: Any, **kw: Any) -> str:
    (arg,) = element.clauses
    return f"CAST({compiler.process(arg, **kw)} AS INTEGER)"


@compiles(_trunc_int, "postgresql")
def _trunc_int_pg(element: _trunc_int, compiler: Any, **kw: Any) -> str:
    (arg,) = element.clauses
    return f"CAST(TRUNC({compiler.process(arg, **kw)}) AS INTEGER)"


class _at_most(FunctionElement[int]):
    """``min(x, cap)`` of two integers (SQLite's two-argument ``MIN``, PostgreSQL's ``LEAST``)."""

    type = Integer()
    inherit_cache = True


@compiles(_at_most, "sqlite")
def _at_most_sqlite(element: _at_most, compiler: Any, **kw: Any) -> str:
    x, cap = list(element.clauses)
    return f"MIN({compiler.process(x, **kw)}, {compiler.process(cap, **kw)})"


@compiles(_at_most, "postgresql")
def _at_most_pg(element: _at_most, compiler: Any, **kw: Any) -> str:
    x, cap = list(element.clauses)
    return f"LEAST({compiler.process(x, **kw)}, {compiler.process(cap, **kw)})"


def _followed(elapsed: ColumnElement[float], horizon_days: int) -> ColumnElement[int]:
    """Whole days followed, ``min(floor(elapsed), horizon)``, for ``elapsed >= 1``."""
    return _at_most(_trunc_int(elapsed), literal(horizon_days))


def survival_rows(
    connection: Connection,
    experiment_id: int,
    as_of: datetime,
    horizon_days: int,
    since: date | None = None,
) -> dict[tuple[str, date], dict[int, tuple[int, int]]]:
    """Per arm and assignment day (on or after ``since``): day -> (events, censored).

    Two queries, neither with a subquery per customer: everyone followed for a day, counted by
    the day they would be censored on (from the assignment index alone), and the churn events,
    from the cancellations (a tenth of the rows, found by their own index) joined with the
    assignments. A customer with an event is moved from their censoring day to their event day.
    """
    at_as_of = literal(as_of, table(Assignment).c.assigned_at.type)
    a = experiment_rows(experiment_id, since=since)
    elapsed = days_between(at_as_of, a.c.assigned_at)
    assigned = epoch_day(a.c.assigned_at).label("d")
    censor_day = (_followed(elapsed, horizon_days) - 1).label("c")
    everyone = (
        select(a.c.arm, assigned, censor_day, func.count())
        .where(elapsed >= 1)
        .group_by(a.c.arm, assigned, censor_day)
    )
    tallies: dict[tuple[str, date], dict[int, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    for arm, d, day, count in connection.execute(everyone):
        tallies[(str(arm), EPOCH + timedelta(days=int(d)))][int(day)][1] += int(count)
    for arm, d, day, censored_on, count in connection.execute(
        _events(experiment_id, at_as_of, horizon_days, since)
    ):
        by_day = tallies[(str(arm), EPOCH + timedelta(days=int(d)))]
        by_day[int(day)][0] += int(count)
        by_day[int(censored_on)][1] -= int(count)
    return {
        key: {day: (e, c) for day, (e, c) in sorted(by_day.items()) if e or c}
        for key, by_day in tallies.items()
    }


def _events(experiment_id: int, at_as_of: Any, horizon_days: int, since: date | None) -> Select:
    """Churn events per arm, assignment day, event day and the day the customer would otherwise
    have been censored on: the first cancellation at or after assignment, on a day fully over."""
    a, sub = table(Assignment), table(Subscription)
    conditions = [a.c.experiment_id == experiment_id, sub.c.canceled_at >= a.c.assigned_at]
    if since is not None:
        start = datetime(since.year, since.month, since.day, tzinfo=UTC)
        conditions += [a.c.assigned_at >= start, sub.c.canceled_at >= start]
    else:
        conditions.append(sub.c.canceled_at.is_not(None))
    first = (
        select(a.c.arm, a.c.assigned_at, func.min(sub.c.canceled_at).label("at"))
        .select_from(sub.join(a, a.c.customer_id == sub.c.customer_id))
        .where(*conditions)
        .group_by(a.c.customer_id, a.c.arm, a.c.assigned_at)
        .subquery("fc")
    )
    elapsed = days_between(at_as_of, first.c.assigned_at)
    followed = _followed(elapsed, horizon_days)
    churn_day = _trunc_int(days_between(first.c.at, first.c.assigned_at)).label("e")
    assigned, censor_day = epoch_day(first.c.assigned_at).label("d"), (followed - 1).label("c")
    return (
        select(first.c.arm, assigned, churn_day, censor_day, func.count())
        .where(elapsed >= 1, churn_day < followed)
        .group_by(first.c.arm, assigned, churn_day, censor_day)
    )


def counts_per_arm(
    groups: Mapping[tuple[str, date], Mapping[int, tuple[int, int]]],
) -> dict[str, SurvivalCounts]:
    """Add up the per-assignment-day tallies into each arm's :class:`SurvivalCounts`."""
    tallies: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for (arm, _assigned), by_day in groups.items():
        for day, (events, censored) in by_day.items():
            tallies[arm][day][0] += events
            tallies[arm][day][1] += censored
    return {
        arm: SurvivalCounts(
            days=tuple(sorted(by_day)),
            events=tuple(by_day[d][0] for d in sorted(by_day)),
            censored=tuple(by_day[d][1] for d in sorted(by_day)),
        )
        for arm, by_day in sorted(tallies.items())
    }


def check_survival_arguments(as_of: datetime, horizon_days: int) -> None:
    """Raise ``ValueError`` for a horizon that is not a whole number >= 1 or a naive ``as_of``."""
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int) or horizon_days < 1:
        raise ValueError(f"horizon_days must be a whole number >= 1, got {horizon_days!r}")
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware (UTC), got naive {as_of!r}")


def survival_counts(
    engine: Engine, experiment_id: int, as_of: datetime, horizon_days: int = 90
) -> dict[str, SurvivalCounts]:
    """Per arm, the number of customers who churned and who were censored on each day.

    See the module docstring for the definition of the time, the censoring and the edge cases.
    Arms with no customer followed for a whole day yet are absent from the result.
    """
    check_survival_arguments(as_of, horizon_days)
    with engine.connect() as connection:
        groups = survival_rows(connection, experiment_id, as_of, horizon_days)
    return counts_per_arm(groups)
