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
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, false, func, literal, not_, or_, select, union_all
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


Tallies = dict[tuple[str, date], dict[int, tuple[int, int]]]
"""(arm, assignment day) -> day since assignment -> (events, censored)."""
Ranges = Sequence[tuple[datetime, datetime]]
"""Closed intervals of ``assigned_at``."""


def assigned_in(a: Any, experiment_id: int, ranges: Ranges) -> ColumnElement[bool]:
    """Assignment rows ``a`` of the experiment assigned in one of the closed ``ranges`` (false
    for none). Each range repeats the experiment, so that both planners read each one as an
    index range (SQLite's OR optimisation needs every alternative indexable on its own)."""
    terms = [
        and_(a.c.experiment_id == experiment_id, a.c.assigned_at.between(lo, hi))
        for lo, hi in ranges
    ]
    return or_(*terms) if terms else false()


def rows_in(experiment_id: int, since: date | None, ranges: Ranges) -> Any:
    """The experiment's assignment rows (assigned on ``since`` or later) within the disjoint
    ``ranges``: one index range each, as a ``UNION ALL`` (an ``OR`` of ranges is one range per
    alternative on PostgreSQL, but SQLite scans every row since ``since`` testing each)."""
    a = table(Assignment)
    columns = (a.c.customer_id, a.c.experiment_id, a.c.arm, a.c.assigned_at)
    start = [a.c.assigned_at >= _start_of(since)] if since is not None else []
    parts = [
        select(*columns).where(
            a.c.experiment_id == experiment_id, a.c.assigned_at.between(lo, hi), *start
        )
        for lo, hi in ranges
    ] or [select(*columns).where(false())]
    return (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("a")


def _start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def survival_rows(
    connection: Connection,
    experiment_id: int,
    as_of: datetime,
    horizon_days: int,
    since: date | None = None,
    ranges: Ranges | None = None,
) -> Tallies:
    """Per arm and assignment day (on or after ``since``; assigned within ``ranges`` when given):
    day -> (events, censored).

    Two queries, neither with a subquery per customer: everyone followed for a day, counted by
    the day they would be censored on (from the assignment index alone), and the churn events,
    from the cancellations (a tenth of the rows, found by their own index) joined with the
    assignments. A customer with an event is moved from their censoring day to their event day.
    """
    at_as_of = literal(as_of, table(Assignment).c.assigned_at.type)
    a = (
        experiment_rows(experiment_id, since=since)
        if ranges is None
        else rows_in(experiment_id, since, ranges)
    )
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
    first = _first_cancellations(experiment_id, since, ranges)
    for arm, d, day, censored_on, count in connection.execute(
        _events(first, at_as_of, horizon_days)
    ):
        by_day = tallies[(str(arm), EPOCH + timedelta(days=int(d)))]
        by_day[int(day)][0] += int(count)
        by_day[int(censored_on)][1] -= int(count)
    return _nonzero(tallies)


def _add(tallies: dict[tuple[str, date], dict[int, list[int]]], groups: Tallies, sign: int) -> None:
    for key, by_day in groups.items():
        counts = tallies[key]
        for day, (e, c) in by_day.items():
            counts[day][0] += sign * e
            counts[day][1] += sign * c


def _nonzero(tallies: Mapping[tuple[str, date], Mapping[int, Sequence[int]]]) -> Tallies:
    out: Tallies = {}
    for key, by_day in tallies.items():
        kept = {day: (int(e), int(c)) for day, (e, c) in sorted(by_day.items()) if e or c}
        if kept:
            out[key] = kept
    return out


def _first_cancellations(
    experiment_id: int,
    since: date | None,
    ranges: Ranges | None = None,
    *,
    skip: Ranges = (),
    canceled_after: datetime | None = None,
    canceled_before: datetime | None = None,
) -> Any:
    """Per assigned customer (on or after ``since``, within ``ranges``, outside ``skip``) with a
    cancellation at or after assignment: arm, ``assigned_at`` and the first such cancellation
    (``at``). With ``canceled_after``, only customers with a cancellation in
    ``(canceled_after, canceled_before)``, found from the cancellations' own index."""
    a: Any = table(Assignment) if ranges is None else rows_in(experiment_id, since, ranges)
    sub = table(Subscription)
    conditions = [a.c.experiment_id == experiment_id, sub.c.canceled_at >= a.c.assigned_at]
    if since is not None:
        start = _start_of(since)
        conditions += [a.c.assigned_at >= start, sub.c.canceled_at >= start]
    else:
        conditions.append(sub.c.canceled_at.is_not(None))
    if skip:
        conditions.append(not_(assigned_in(a, experiment_id, skip)))
    if canceled_after is not None:
        recent = table(Subscription).alias("recent")
        window = [recent.c.canceled_at > canceled_after]
        if canceled_before is not None:
            window.append(recent.c.canceled_at < canceled_before)
            # No cancellation after the window can be a first one in it: the index range ends.
            conditions.append(sub.c.canceled_at < canceled_before)
        conditions.append(a.c.customer_id.in_(select(recent.c.customer_id).where(*window)))
    return (
        select(a.c.arm, a.c.assigned_at, func.min(sub.c.canceled_at).label("at"))
        .select_from(sub.join(a, a.c.customer_id == sub.c.customer_id))
        .where(*conditions)
        .group_by(a.c.customer_id, a.c.arm, a.c.assigned_at)
        .subquery("fc")
    )


def _events(first: Any, at_as_of: Any, horizon_days: int) -> Select:
    """Churn events per arm, assignment day, event day and the day the customer would otherwise
    have been censored on: the first cancellation at or after assignment, on a day fully over."""
    elapsed = days_between(at_as_of, first.c.assigned_at)
    followed = _followed(elapsed, horizon_days)
    churn_day = _trunc_int(days_between(first.c.at, first.c.assigned_at)).label("e")
    assigned, censor_day = epoch_day(first.c.assigned_at).label("d"), (followed - 1).label("c")
    return (
        select(first.c.arm, assigned, churn_day, censor_day, func.count())
        .where(elapsed >= 1, churn_day < followed)
        .group_by(first.c.arm, assigned, churn_day, censor_day)
    )


# --- Advancing stored tallies to a later as_of ---------------------------------------------------

DAY = timedelta(days=1)
# Customers whose day boundary falls this close to an evaluation's as_of are recounted in SQL,
# so float rounding in the databases' day arithmetic can never tell them apart from a recount.
EDGE = timedelta(minutes=1)
# Up to this far from a whole number of days after the stored tallies, advancing them reads
# less than a recount (beyond it, the customers to recount are most of the open cohorts).
MAX_OFFSET = timedelta(hours=6)


def advance_plan(before: datetime, as_of: datetime) -> tuple[int, list[tuple[datetime, datetime]]]:
    """Whole days ``k`` to shift tallies taken at ``before`` to ``as_of``, and the boundary
    window ``[lo, hi]``: a customer whose day count from ``before`` to ``as_of`` is not ``k`` (or
    whose day boundary is within :data:`EDGE` of ``before``) has a boundary ``assigned_at + j
    days`` inside it. Raises ``ValueError`` when ``as_of`` is not after ``before`` or not within
    :data:`MAX_OFFSET` of ``before`` plus whole days."""
    if as_of < before:
        raise ValueError("as_of is before the stored tallies")
    k = round((as_of - before) / DAY)
    shifted = before + k * DAY
    if abs(as_of - shifted) > MAX_OFFSET:
        raise ValueError("as_of is too far from whole days after the stored tallies")
    return k, [(min(shifted, as_of) - EDGE, max(shifted, as_of) + EDGE)]


def recount_ranges(
    before: datetime, as_of: datetime, open_from: date, window: tuple[datetime, datetime]
) -> list[tuple[datetime, datetime]]:
    """The ``assigned_at`` ranges of open cohorts (assigned on ``open_from`` or later) to recount
    rather than shift: customers with a day boundary in ``window``, and those not followed for a
    whole day at ``before`` (assigned within a day, plus :data:`EDGE`, of it)."""
    lo, hi = window
    start = _start_of(open_from)
    ranges = [(before - DAY - EDGE, max(as_of, before))]
    j = 1
    while hi - j * DAY >= start:
        ranges.append((lo - j * DAY, hi - j * DAY))
        j += 1
    # Merge overlaps (the newest customers' range meets the first boundary windows).
    merged: list[tuple[datetime, datetime]] = []
    for r_lo, r_hi in sorted(ranges):
        if merged and r_lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], r_hi))
        else:
            merged.append((r_lo, r_hi))
    return merged


def advance_tallies(
    connection: Connection,
    experiment_id: int,
    stored: Tallies,
    before: datetime,
    as_of: datetime,
    horizon_days: int,
    open_from: date,
) -> Tallies:
    """The tallies of the cohorts assigned on ``open_from`` or later as of ``as_of``, from their
    tallies ``stored`` as of ``before`` (see :func:`advance_plan` for which ``as_of`` qualify),
    reading only what changed:

    - customers whose followed days grow by other than the whole days ``k`` between the two (a
      day boundary between ``before + k days`` and ``as_of``, or at the edge of either), and the
      customers assigned in the last day before ``before``, are recounted in SQL: their tallies
      as of ``before`` are taken out and those as of ``as_of`` put in;
    - every other censored customer is followed ``k`` more days (up to the horizon): their
      censoring day moves by ``k``, unless their first cancellation falls on one of the newly
      followed days, found among the cancellations since ``before`` minus a day.

    Events already counted never change. The result equals :func:`survival_rows` at ``as_of``
    on the same data (data back-dated behind ``before`` is not seen; see
    :mod:`models.daily_aggregates`)."""
    k, windows = advance_plan(before, as_of)
    recount = recount_ranges(before, as_of, open_from, windows[0])
    at_before = survival_rows(connection, experiment_id, before, horizon_days, open_from, recount)
    at_as_of = survival_rows(connection, experiment_id, as_of, horizon_days, open_from, recount)
    tallies: dict[tuple[str, date], dict[int, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    _add(tallies, {key: v for key, v in stored.items() if key[1] >= open_from}, 1)
    _add(tallies, at_before, -1)
    if k:
        for counts in tallies.values():
            moved = {day: ec[1] for day, ec in counts.items() if ec[1]}
            for day in moved:
                counts[day][1] = 0
            for day, count in moved.items():
                counts[min(day + k, horizon_days - 1)][1] += count
        first = _first_cancellations(
            experiment_id,
            open_from,
            skip=recount,
            canceled_after=before - DAY - EDGE,
            canceled_before=as_of,
        )
        stamp = table(Assignment).c.assigned_at.type
        was_followed = _followed(
            days_between(literal(before, stamp), first.c.assigned_at), horizon_days
        )
        newly = _events(first, literal(as_of, stamp), horizon_days).where(
            _trunc_int(days_between(first.c.at, first.c.assigned_at)) >= was_followed
        )
        for arm, d, day, censored_on, count in connection.execute(newly):
            counts = tallies[(str(arm), EPOCH + timedelta(days=int(d)))]
            counts[int(day)][0] += int(count)
            counts[int(censored_on)][1] -= int(count)
    _add(tallies, at_as_of, 1)
    if any(e < 0 or c < 0 for by_day in tallies.values() for e, c in by_day.values()):
        raise ValueError("the stored survival tallies do not match the data; recount them")
    return _nonzero(tallies)


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
