"""Incremental evaluation: per-arm sums by assignment day, stored once the day's cohort is final.

A cohort (the customers assigned on one UTC day) is *final* for an aggregate when nothing the next
evaluation could see changes its sums: every window of a metric has matured (the day ended at
least ``window_days`` before ``as_of``), every customer has been followed to the survival horizon,
or, for the pre-assignment covariates, the day is over. Final days are stored in
:mod:`models.aggregate_records`; an evaluation reads them and aggregates in SQL only the customers
assigned since (``assigned_at >= final_before``), so a daily evaluation reads roughly one day of
newly matured customers per metric instead of the whole history.

The stored days are as final as the data: an event back-dated into a stored cohort's window (a
late import, a corrected invoice) is not seen until :func:`forget` drops the experiment's stored
days. An evaluation *earlier* than the stored mark uses only the days final at its own ``as_of``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection, Engine

from experiments.metrics import CATALOGUE
from experiments.spec import Costs
from experiments.stats import SampleStats
from experiments.stats.survival import SurvivalCounts
from models.aggregate_records import AggregateMark, MetricDay, SurvivalDay
from models.balance_sql import COVARIATES, covariate_moments
from models.bulk import insert_ignoring_conflicts, table
from models.metric_sql import metric_moments
from models.moments import Moments
from models.survival_sql import (
    Tallies,
    advance_tallies,
    check_survival_arguments,
    counts_per_arm,
    survival_rows,
)

# Days within this margin of a maturity edge are left for the next evaluation, so that rounding
# in the databases' day arithmetic can never make a stored day differ from a recount.
MARGIN = timedelta(minutes=1)
Groups = dict[tuple[str, date], Moments]
Fresh = Callable[[date | None, Groups], Groups]
"""The groups of the days on or after a day (all days for None), given the stored ones."""
MOMENT_FIELDS = ("n", "shift_y", "sum_y", "sum_y2", "shift_x", "sum_x", "sum_x2", "sum_xy")


def final_before(as_of: datetime, window_days: float) -> date:
    """The first assignment day not final at ``as_of`` for a window of ``window_days``: every day
    before it ended at least ``window_days`` (plus :data:`MARGIN`) before ``as_of``."""
    return (as_of - timedelta(days=window_days) - MARGIN).date()


def metric_key(name: str, lookback_days: float | None, costs: Costs) -> str:
    """The stored aggregate's name: the metric and every setting its per-customer value uses."""
    settings = {"lookback": lookback_days, "costs": costs.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"metric:{name}:{digest}"


def _mark(connection: Connection, experiment_id: int, key: str) -> date | None:
    marks = table(AggregateMark)
    query = select(marks.c.final_before).where(
        marks.c.experiment_id == experiment_id, marks.c.key == key
    )
    found = connection.execute(query).scalar()
    return found if isinstance(found, date) else None


def _move_mark(
    connection: Connection, experiment_id: int, key: str, new: date, as_of: datetime
) -> None:
    marks = table(AggregateMark)
    row = {"experiment_id": experiment_id, "key": key, "final_before": new, "as_of": as_of}
    insert_ignoring_conflicts(connection, marks, [row], ["experiment_id", "key"])
    connection.execute(
        update(marks)
        .where(
            marks.c.experiment_id == experiment_id,
            marks.c.key == key,
            marks.c.final_before < new,
        )
        .values(final_before=new, as_of=as_of)
    )


def _stored_moments(
    connection: Connection, experiment_id: int, key: str, before: date
) -> dict[tuple[str, date], Moments]:
    days = table(MetricDay)
    query = select(days.c.arm, days.c.day, *(days.c[f] for f in MOMENT_FIELDS)).where(
        days.c.experiment_id == experiment_id, days.c.key == key, days.c.day < before
    )
    out: dict[tuple[str, date], Moments] = {}
    for arm, day, n, *sums in connection.execute(query):
        out[(arm, day)] = Moments(int(n), *(float(s) for s in sums))
    return out


def _incremental_moments(
    connection: Connection,
    experiment_id: int,
    key: str,
    metric: str,
    as_of: datetime,
    window_days: float,
    fresh_since: Fresh,
) -> dict[tuple[str, date], Moments]:
    mark = _mark(connection, experiment_id, key)
    final = final_before(as_of, window_days)
    since = min(mark, final) if mark is not None else None
    stored = _stored_moments(connection, experiment_id, key, since) if since else {}
    fresh: dict[tuple[str, date], Moments] = fresh_since(since, stored)
    rows = [
        {"experiment_id": experiment_id, "key": key, "metric": metric, "arm": arm, "day": day}
        | {f: getattr(m, f) for f in MOMENT_FIELDS}
        for (arm, day), m in fresh.items()
        if day < final
    ]
    insert_ignoring_conflicts(
        connection, table(MetricDay), rows, ["experiment_id", "key", "arm", "day"]
    )
    _move_mark(connection, experiment_id, key, final, as_of)
    return stored | fresh


def _few(connection: Connection, since: date | None, final: date, stored: Groups) -> bool:
    """Whether the days to aggregate (``since`` to ``final``) are few next to the ``stored``
    ones (a tenth or less): then looking up each new customer's events by index (PostgreSQL)
    reads less than joining the whole event tables, which the planner prefers without knowing
    how few they are. SQLite joins by index anyway."""
    if since is None or connection.dialect.name != "postgresql":
        return False
    days = len({day for _arm, day in stored})
    return ((final - since).days + 1) * 10 <= days


def per_arm(groups: Mapping[tuple[str, date], Moments]) -> dict[str, Moments]:
    """Add up per-day moments into one per arm (exactly, re-shifting as needed)."""
    out: dict[str, Moments] = {}
    for (arm, _day), m in sorted(groups.items()):
        out[arm] = out[arm] + m if arm in out else m
    return out


def metric_statistics(
    engine: Engine,
    experiment_id: int,
    name: str,
    as_of: datetime,
    arms: list[str],
    *,
    costs: Costs | None = None,
    lookback_days: float | None = None,
) -> dict[str, Moments]:
    """Per arm, the moments of metric ``name`` (with CUPED's pre-period ``x`` when
    ``lookback_days`` is given): stored final days plus the days since, aggregated now."""
    costs = costs or Costs()
    key = metric_key(name, lookback_days, costs)
    window = CATALOGUE[name].window_days

    def fresh(since: date | None, stored: Groups) -> dict[tuple[str, date], Moments]:
        return metric_moments(
            connection,
            experiment_id,
            name,
            as_of,
            arms,
            costs=costs,
            lookback_days=lookback_days,
            since=since,
            lookups=_few(connection, since, final_before(as_of, window), stored),
        )

    with engine.begin() as connection:
        groups = _incremental_moments(connection, experiment_id, key, name, as_of, window, fresh)
    return per_arm(groups)


def covariate_statistics(
    engine: Engine, experiment_id: int, as_of: datetime, arms: list[str]
) -> dict[str, dict[str, SampleStats]]:
    """covariate -> arm -> sufficient statistics; days over by ``as_of`` are stored and reused."""
    out: dict[str, dict[str, SampleStats]] = {}
    with engine.begin() as connection:
        cache: dict[date | None, dict[str, dict[tuple[str, date], Moments]]] = {}

        def fresh_of(name: str) -> Fresh:
            def fresh(since: date | None, _stored: Groups) -> dict[tuple[str, date], Moments]:
                if since not in cache:
                    cache[since] = covariate_moments(connection, experiment_id, arms, since)
                return cache[since][name]

            return fresh

        for name in COVARIATES:
            key = f"covariate:{name}"
            groups = _incremental_moments(
                connection, experiment_id, key, name, as_of, 0.0, fresh_of(name)
            )
            out[name] = {arm: m.sample() for arm, m in per_arm(groups).items()}
    return out


def _stored_survival(
    connection: Connection,
    experiment_id: int,
    horizon_days: int,
    before: date | None,
    since: date | None,
) -> Tallies:
    days = table(SurvivalDay)
    query = select(days.c.arm, days.c.day, days.c.churn_day, days.c.events, days.c.censored).where(
        days.c.experiment_id == experiment_id, days.c.horizon_days == horizon_days
    )
    if before is not None:
        query = query.where(days.c.day < before)
    if since is not None:
        query = query.where(days.c.day >= since)
    groups: Tallies = {}
    for arm, day, churn_day, events, censored in connection.execute(query):
        groups.setdefault((arm, day), {})[int(churn_day)] = (int(events), int(censored))
    return groups


def _replace_survival(
    connection: Connection, experiment_id: int, horizon_days: int, old: Tallies, new: Tallies
) -> None:
    """Write the rows of ``new`` that differ from ``old`` (the stored rows of the same days)."""
    days = table(SurvivalDay)
    # Only the cohorts that changed (the final ones and most events stay as they were).
    changed_cohorts = [k for k in old.keys() | new.keys() if old.get(k) != new.get(k)]
    flat_old = {(*k, c): v for k in changed_cohorts for c, v in old.get(k, {}).items()}
    flat_new = {(*k, c): v for k in changed_cohorts for c, v in new.get(k, {}).items()}
    key = {"experiment_id": experiment_id, "horizon_days": horizon_days}

    def where() -> list[Any]:
        return [
            days.c.experiment_id == experiment_id,
            days.c.horizon_days == horizon_days,
            days.c.arm == bindparam("k_arm"),
            days.c.day == bindparam("k_day"),
            days.c.churn_day == bindparam("k_churn_day"),
        ]

    def ids(k: tuple[str, date, int]) -> dict[str, Any]:
        return {"k_arm": k[0], "k_day": k[1], "k_churn_day": k[2]}

    gone = [ids(k) for k in flat_old if k not in flat_new]
    changed = [
        ids(k) | {"k_events": v[0], "k_censored": v[1]}
        for k, v in flat_new.items()
        if k in flat_old and flat_old[k] != v
    ]
    added = [
        key | {"arm": k[0], "day": k[1], "churn_day": k[2], "events": v[0], "censored": v[1]}
        for k, v in flat_new.items()
        if k not in flat_old
    ]
    if gone:
        connection.execute(delete(days).where(*where()), gone)
    if changed:
        connection.execute(
            update(days)
            .where(*where())
            .values(events=bindparam("k_events"), censored=bindparam("k_censored")),
            changed,
        )
    if added:
        connection.execute(days.insert(), added)


def _open_tallies(key: str) -> str:
    return f"{key}:open"


def _survival_marks(
    connection: Connection, experiment_id: int, key: str
) -> tuple[date | None, tuple[date, datetime] | None]:
    """The final mark, and the stored open tallies' first day and as_of (locked until the end of
    the transaction on PostgreSQL, so concurrent evaluations advance them one after the other)."""
    marks = table(AggregateMark)
    query = (
        select(marks.c.key, marks.c.final_before, marks.c.as_of)
        .where(marks.c.experiment_id == experiment_id, marks.c.key.in_([key, _open_tallies(key)]))
        .with_for_update()
    )
    final: date | None = None
    opened: tuple[date, datetime] | None = None
    for k, day, as_of in connection.execute(query):
        if k == key:
            final = day
        else:
            opened = (day, as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    return final, opened


def _set_mark(
    connection: Connection, experiment_id: int, key: str, day: date, as_of: datetime
) -> None:
    marks = table(AggregateMark)
    row = {"experiment_id": experiment_id, "key": key, "final_before": day, "as_of": as_of}
    if insert_ignoring_conflicts(connection, marks, [row], ["experiment_id", "key"]) == 0:
        connection.execute(
            update(marks)
            .where(marks.c.experiment_id == experiment_id, marks.c.key == key)
            .values(final_before=day, as_of=as_of)
        )


def survival_statistics(
    engine: Engine, experiment_id: int, as_of: datetime, horizon_days: int
) -> dict[str, SurvivalCounts]:
    """Per arm survival tallies. Cohorts followed to the horizon are stored for good; the tallies
    of the cohorts still open are stored too, as of the evaluation, and the next evaluation
    advances them (:func:`models.survival_sql.advance_tallies`: the newly followed days and the
    cancellations since) instead of recounting every open cohort."""
    check_survival_arguments(as_of, horizon_days)
    key = f"survival:{horizon_days}"
    with engine.begin() as connection:
        mark, opened = _survival_marks(connection, experiment_id, key)
        final = final_before(as_of, horizon_days)
        since = min(mark, final) if mark is not None else None
        # The newest evaluation (not one back in time) replaces the stored open tallies.
        newest = mark is None or final >= mark
        stored, previous = {}, {}
        if since is not None:
            stored = _stored_survival(connection, experiment_id, horizon_days, since, None)
            if newest:
                previous = _stored_survival(connection, experiment_id, horizon_days, None, since)
        fresh: Tallies | None = None
        if newest and opened is not None and opened[0] == mark and opened[1] <= as_of:
            try:
                fresh = advance_tallies(
                    connection, experiment_id, previous, opened[1], as_of, horizon_days, opened[0]
                )
            except ValueError:
                fresh = None  # far from whole days after them, or they no longer match: recount
        if fresh is None:
            fresh = survival_rows(connection, experiment_id, as_of, horizon_days, since)
        if newest:
            _replace_survival(connection, experiment_id, horizon_days, previous, fresh)
            _set_mark(connection, experiment_id, key, final, as_of)
            _set_mark(connection, experiment_id, _open_tallies(key), final, as_of)
    return counts_per_arm(stored | fresh)


def forget(engine: Engine, experiment_id: int) -> None:
    """Drop the experiment's stored days and marks (after back-dated data changed them)."""
    with engine.begin() as connection:
        for model in (MetricDay, SurvivalDay, AggregateMark):
            t = table(model)
            connection.execute(delete(t).where(t.c.experiment_id == experiment_id))


@dataclass(frozen=True)
class CumulativeDay:
    """Every final cohort assigned up to and including ``day``, per arm."""

    day: date
    arms: dict[str, SampleStats]


def cumulative_series(engine: Engine, experiment_id: int, metric: str) -> list[CumulativeDay]:
    """The stored per-day sums of ``metric`` (the settings of its latest evaluation), added up
    day by day: the metric per arm as it stood with the cohorts final by each day, for a
    lift-over-time chart or a sequential test's history, without touching the customer tables."""
    marks = table(AggregateMark)
    with engine.connect() as connection:
        key = connection.execute(
            select(marks.c.key)
            .where(
                marks.c.experiment_id == experiment_id,
                marks.c.key.like(f"metric:{metric}:%"),
            )
            .order_by(marks.c.as_of.desc(), marks.c.id.desc())
            .limit(1)
        ).scalar()
        if key is None:
            return []
        stored = _stored_moments(connection, experiment_id, str(key), date.max)
    by_day: dict[date, list[tuple[str, Moments]]] = {}
    for (arm, day), m in stored.items():
        by_day.setdefault(day, []).append((arm, m))
    running: dict[str, Moments] = {}
    series = []
    for day in sorted(by_day):
        for arm, m in by_day[day]:
            running[arm] = running[arm] + m if arm in running else m
        series.append(CumulativeDay(day, {arm: m.sample() for arm, m in sorted(running.items())}))
    return series
