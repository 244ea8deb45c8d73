"""Metrics per assigned customer, in SQL, aggregated per arm (and assignment day) into sufficient
statistics.

Each catalogue metric (:mod:`experiments.metrics`) is a short list of :class:`Term` s in
:data:`METRICS`: which rows of which table count (``Source``), how (does any row exist, does none,
or the sum of a value) and with what weight. A metric's window starts at the customer's
``assigned_at`` and lasts ``window_days``; only customers whose window has ended by ``as_of`` are
counted (an immature window is neither a success nor a failure), and only events before ``as_of``.

How it is computed, once per query and never per reference: every term is one pre-aggregated
join, ``assignments ⋈ events GROUP BY customer`` (the window test and, for CUPED, the pre-period
test in the same pass), left-joined to the assignment rows; one ``GROUP BY arm, assignment day``
then sums around a per-arm shift (:mod:`models.moments`). There is no correlated subquery, so both
planners can hash-join, and PostgreSQL can run the whole plan in parallel workers.

Adding a metric is one entry in :data:`METRICS` (and one in :data:`experiments.metrics.CATALOGUE`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Float, and_, case, cast, exists, func, literal, or_, select, true
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import SQLModel

from experiments.metrics import CATALOGUE
from experiments.spec import Costs
from experiments.stats import SampleStats
from experiments.stats.cuped import PairedStats
from models.bulk import table
from models.customer_data import ActivityEvent, Invoice, PaymentMethod, Subscription
from models.moments import Moments
from models.records import Assignment, Message, OfferGrant, Suppression
from models.sqltime import days_between, epoch_day

Expression = ColumnElement[float]
Aggregate = Literal["any", "none", "sum"]
EPOCH = date(1970, 1, 1)

ASSIGNMENTS = table(Assignment).alias("a")


@dataclass(frozen=True)
class Source:
    """Rows of one table that a metric looks at: ``at`` names the timestamp that must fall in the
    window; ``where(rows, assignment)`` filters them (it may compare with the assignment row, e.g.
    an invoice already past due at ``assigned_at``); ``value(rows, costs)`` is what a row adds to a
    sum (default 1); ``per_experiment`` keeps only the experiment's own rows."""

    model: type[SQLModel]
    at: str
    where: Callable[[Any, Any], ColumnElement[bool]] | None = None
    value: Callable[[Any, Costs], ColumnElement[Any]] | None = None
    per_experiment: bool = False


@dataclass(frozen=True)
class Term:
    """One part of a metric: 1 if ``any`` row of the source falls in the window, 1 if ``none``
    does, or the ``sum`` of their values; times ``weight``."""

    source: Source
    aggregate: Aggregate
    weight: float = 1.0


def _message_cost(msg: Any, costs: Costs) -> ColumnElement[Any]:
    return case(
        (msg.c.channel == "email", literal(costs.email)),
        (msg.c.channel == "sms", literal(costs.sms)),
        else_=literal(0.0),
    )


def _offer_cost(og: Any, costs: Costs) -> ColumnElement[Any]:
    whens = [(og.c.offer_kind == kind, literal(cost)) for kind, cost in costs.offer.items()]
    return case(*whens, else_=literal(0.0)) if whens else literal(0.0)


PAID_REVENUE = Term(
    Source(
        Invoice,
        "paid_at",
        where=lambda inv, _a: inv.c.status == "paid",
        value=lambda inv, _costs: inv.c.amount_cents,
    ),
    "sum",
    weight=0.01,
)
CANCELED = Term(Source(Subscription, "canceled_at"), "none")


def _recovers_owed_payment(paid: Any, a: Any) -> ColumnElement[bool]:
    owed = table(Invoice).alias("owed")
    return and_(
        paid.c.status == "paid",
        exists()
        .where(
            owed.c.customer_id == a.c.customer_id,
            owed.c.due_at < a.c.assigned_at,
            owed.c.status != "void",
            or_(owed.c.paid_at.is_(None), owed.c.paid_at >= a.c.assigned_at),
        )
        .correlate(a),  # the assignment row, also from a LATERAL lookup (see _term_values)
    )


METRICS: dict[str, tuple[Term, ...]] = {
    "card_updated_14d": (Term(Source(PaymentMethod, "created_at"), "any"),),
    "onboarding_completed_14d": (
        Term(
            Source(
                ActivityEvent,
                "occurred_at",
                where=lambda ev, _a: and_(
                    ev.c.kind == "milestone", ev.c.name == "onboarding_completed"
                ),
            ),
            "any",
        ),
    ),
    "offer_accepted_14d": (Term(Source(OfferGrant, "accepted_at", per_experiment=True), "any"),),
    # Owed at assignment (an invoice due before it, not voided, unpaid then) and an invoice of
    # the customer paid in the window.
    "payment_recovered_14d": (
        Term(Source(Invoice, "paid_at", where=_recovers_owed_payment), "any"),
    ),
    "retained_30d": (CANCELED,),
    "retained_60d": (CANCELED,),
    "retained_90d": (CANCELED,),
    "revenue_90d": (PAID_REVENUE,),
    # Revenue minus what this experiment spent on the customer: messages sent and offers
    # accepted, at the costs configured in the spec.
    "net_revenue_90d": (
        PAID_REVENUE,
        Term(
            Source(
                Message,
                "sent_at",
                where=lambda msg, _a: msg.c.status == "sent",
                value=_message_cost,
                per_experiment=True,
            ),
            "sum",
            weight=-1.0,
        ),
        Term(
            Source(OfferGrant, "accepted_at", value=_offer_cost, per_experiment=True),
            "sum",
            weight=-1.0,
        ),
    ),
    "unsubscribed_30d": (Term(Source(Suppression, "created_at"), "any"),),
}
BUILDERS = METRICS  # the name the catalogue test has always checked


@dataclass(frozen=True)
class Window:
    """Where a metric is measured: ``[start + offset, start + offset + days)`` for each row of
    ``source`` (``start`` is its ``assigned_at``), counting only events before ``as_of``."""

    as_of: datetime
    days: float
    offset: float = 0.0
    source: Any = ASSIGNMENTS
    costs: Costs = field(default_factory=Costs)


def _term_values(
    term: Term, w: Window, a: FromClause, lookback: float | None, i: int, lookups: bool = False
) -> FromClause:
    """Per assigned customer, the term's raw value in the window (``y``) and in the pre-period
    (``x``), from one join of the source rows with the assignment rows, grouped by customer; with
    ``lookups``, from the customer's own rows found by index (``LATERAL``, PostgreSQL): for a
    few customers (a daily evaluation's newly matured day), a hash join would read the whole
    event table for them."""
    src = term.source
    rows = table(src.model).alias(f"ev{i}")
    at = rows.c[src.at]
    elapsed = days_between(at, a.c.assigned_at)
    in_y = and_(elapsed >= w.offset, elapsed < w.offset + w.days)
    in_x = and_(elapsed >= -lookback, elapsed < 0) if lookback else None
    join = rows.c.customer_id == a.c.customer_id
    if src.per_experiment:
        join = and_(join, rows.c.experiment_id == a.c.experiment_id)
    conditions = [at < w.as_of, in_y if in_x is None else or_(in_y, in_x)]
    if src.where is not None:
        conditions.append(src.where(rows, a))
    value = src.value(rows, w.costs) if src.value is not None else literal(1)

    def part(inside: ColumnElement[bool]) -> ColumnElement[Any]:
        if term.aggregate == "sum":
            return func.sum(case((inside, value), else_=literal(0)))
        return func.max(case((inside, literal(1)), else_=literal(0)))

    columns = [a.c.customer_id.label("customer_id"), part(in_y).label("y")]
    if in_x is not None:
        columns.append(part(in_x).label("x"))
    if lookups:
        return select(*columns[1:]).where(join, *conditions).lateral(f"t{i}")
    return (
        select(*columns)
        .select_from(a.join(rows, join))
        .where(*conditions)
        .group_by(a.c.customer_id)
        .subquery(f"t{i}")
    )


def _combine(terms: tuple[Term, ...], values: list[Any], column: str) -> Expression:
    total: Any = None
    for term, t in zip(terms, values, strict=True):
        raw = func.coalesce(t.c[column], literal(0))
        part = literal(1) - raw if term.aggregate == "none" else raw
        weighted = part * literal(term.weight) if term.weight != 1.0 else part
        total = weighted if total is None else total + weighted
    return cast(total, Float)


def customer_values(
    name: str, w: Window, a: FromClause, lookback: float | None = None, lookups: bool = False
) -> Select:
    """Per row of ``a`` (customer_id, arm, assigned_at): metric ``name`` in the window as ``y``
    and, when ``lookback`` is given, over the ``lookback`` days before assignment as ``x``
    (``lookups``: see :func:`_term_values`)."""
    terms = METRICS[name]
    values = [_term_values(term, w, a, lookback, i, lookups) for i, term in enumerate(terms)]
    joined: Any = a
    for t in values:
        on = true() if lookups else t.c.customer_id == a.c.customer_id
        joined = joined.outerjoin(t, on)
    columns = [a.c.customer_id, a.c.arm, a.c.assigned_at, _combine(terms, values, "y").label("y")]
    if lookback:
        columns.append(_combine(terms, values, "x").label("x"))
    return select(*columns).select_from(joined)


def _shifted(arm: Any, shifts: Mapping[str, float], value: Any) -> Any:
    if not shifts or all(s == 0 for s in shifts.values()):
        return value
    return value - case(*((arm == k, literal(s)) for k, s in shifts.items()), else_=literal(0.0))


def grouped_moments(
    connection: Connection,
    per_customer: Select,
    shifts_y: Mapping[str, float],
    shifts_x: Mapping[str, float] | None = None,
) -> dict[tuple[str, date], Moments]:
    """``GROUP BY arm, assignment day`` of ``per_customer`` (arm, assigned_at, y[, x]) into
    :class:`Moments` around the given per-arm shifts."""
    pc = per_customer.subquery("pc")
    dy = _shifted(pc.c.arm, shifts_y, pc.c.y)
    sums = [func.sum(dy), func.sum(dy * dy)]
    if shifts_x is not None:
        dx = _shifted(pc.c.arm, shifts_x, pc.c.x)
        sums += [func.sum(dx), func.sum(dx * dx), func.sum(dx * dy)]
    day = epoch_day(pc.c.assigned_at).label("day")
    query = select(pc.c.arm, day, func.count(), *sums).group_by(pc.c.arm, day)
    out: dict[tuple[str, date], Moments] = {}
    for arm, d, n, *s in connection.execute(query):
        fields: dict[str, Any] = {"n": int(n), "shift_y": shifts_y.get(arm, 0.0)}
        fields |= {"sum_y": float(s[0] or 0), "sum_y2": float(s[1] or 0)}
        if shifts_x is not None:
            fields |= {"shift_x": shifts_x.get(arm, 0.0), "sum_x": float(s[2] or 0)}
            fields |= {"sum_x2": float(s[3] or 0), "sum_xy": float(s[4] or 0)}
        out[(arm, EPOCH + timedelta(days=int(d)))] = Moments(**fields)
    return out


def experiment_rows(
    experiment_id: int,
    as_of: datetime | None = None,
    matured_days: float = 0.0,
    since: date | None = None,
    customers: list[int] | None = None,
) -> FromClause:
    """The experiment's assignment rows, optionally only those assigned on day ``since`` or later,
    at least ``matured_days`` before ``as_of``, or of the given ``customers``."""
    a = table(Assignment)
    conditions = [a.c.experiment_id == experiment_id]
    if as_of is not None:
        # The exact test as before, plus the same bound as a range the index can use.
        latest = as_of - timedelta(days=matured_days) + timedelta(seconds=1)
        at_as_of = literal(as_of, a.c.assigned_at.type)
        conditions += [
            a.c.assigned_at <= latest,
            days_between(at_as_of, a.c.assigned_at) >= matured_days,
        ]
    if since is not None:
        conditions.append(
            a.c.assigned_at >= datetime(since.year, since.month, since.day, tzinfo=UTC)
        )
    if customers is not None:
        conditions.append(a.c.customer_id.in_(customers))
    columns = (a.c.customer_id, a.c.experiment_id, a.c.arm, a.c.assigned_at)
    return select(*columns).where(*conditions).subquery("a")


def representatives(connection: Connection, experiment_id: int, arms: list[str]) -> list[int]:
    """One customer per arm (the smallest id), whose values serve as the arm's shift (the
    unique (experiment, customer) index finds each in a few rows)."""
    a = table(Assignment)
    out = []
    for arm in arms:
        found = connection.execute(
            select(func.min(a.c.customer_id)).where(
                a.c.experiment_id == experiment_id, a.c.arm == arm
            )
        ).scalar()
        if found is not None:
            out.append(int(found))
    return out


def shifts_of(
    connection: Connection, name: str, w: Window, a: FromClause, lookback: float | None
) -> tuple[dict[str, float], dict[str, float]]:
    """Per arm, the metric's y and x of the first row of ``a`` in that arm (``a`` holds a few
    representative rows: on PostgreSQL, their events are looked up by index)."""
    ys: dict[str, float] = {}
    xs: dict[str, float] = {}
    lookups = connection.dialect.name == "postgresql"
    pc = customer_values(name, w, a, lookback, lookups).subquery()
    query = select(pc).order_by(pc.c.arm, pc.c.customer_id)
    for row in connection.execute(query).mappings():
        if row["arm"] not in ys:
            ys[row["arm"]] = float(row["y"])
            xs[row["arm"]] = float(row["x"]) if lookback else 0.0
    return ys, xs


def metric_moments(
    connection: Connection,
    experiment_id: int,
    name: str,
    as_of: datetime,
    arms: list[str],
    *,
    costs: Costs | None = None,
    lookback_days: float | None = None,
    since: date | None = None,
    lookups: bool = False,
) -> dict[tuple[str, date], Moments]:
    """Per arm and assignment day (on or after ``since``), the moments of metric ``name`` over
    the customers whose window has matured by ``as_of``; with ``lookback_days``, also of the same
    metric over that many days before assignment (CUPED's ``x``). ``lookups`` (PostgreSQL):
    each customer's event rows by index, for a small ``since`` (see :func:`_term_values`)."""
    w = Window(as_of=as_of, days=CATALOGUE[name].window_days, costs=costs or Costs())
    reps = representatives(connection, experiment_id, arms)
    a_reps = experiment_rows(experiment_id, customers=reps)
    ys, xs = shifts_of(connection, name, w, a_reps, lookback_days)
    a = experiment_rows(experiment_id, as_of, w.days, since)
    lookups = lookups and connection.dialect.name == "postgresql"
    per_customer = customer_values(name, w, a, lookback_days, lookups)
    return grouped_moments(connection, per_customer, ys, xs if lookback_days else None)


def arms_of(connection: Connection, experiment_id: int) -> list[str]:
    a = table(Assignment)
    query = select(a.c.arm).where(a.c.experiment_id == experiment_id).distinct()
    return sorted(str(arm) for arm in connection.execute(query).scalars())


def _per_arm(groups: Mapping[tuple[str, date], Moments]) -> dict[str, Moments]:
    out: dict[str, Moments] = {}
    for (arm, _day), m in sorted(groups.items()):
        out[arm] = out[arm] + m if arm in out else m
    return out


def arm_statistics(
    engine: Engine, experiment_id: int, name: str, as_of: datetime, costs: Costs | None = None
) -> dict[str, SampleStats]:
    """Sufficient statistics (n, sum, sum of squares) of metric ``name`` per arm, from SQL."""
    with engine.connect() as connection:
        arms = arms_of(connection, experiment_id)
        groups = metric_moments(connection, experiment_id, name, as_of, arms, costs=costs)
    return {arm: m.sample() for arm, m in _per_arm(groups).items()}


def paired_statistics(
    engine: Engine,
    experiment_id: int,
    name: str,
    as_of: datetime,
    lookback_days: float | None = None,
    costs: Costs | None = None,
) -> dict[str, PairedStats]:
    """Per arm, the sums CUPED needs: the metric (y) and the same metric over the pre-period
    before assignment (x: ``lookback_days``, default the metric's own window), with their squares
    and cross-product."""
    lookback = float(lookback_days or CATALOGUE[name].window_days)
    with engine.connect() as connection:
        arms = arms_of(connection, experiment_id)
        groups = metric_moments(
            connection, experiment_id, name, as_of, arms, costs=costs, lookback_days=lookback
        )
    return {arm: m.paired() for arm, m in _per_arm(groups).items()}


def window_statistics(
    engine: Engine, name: str, window: Window, where: ColumnElement[bool] | None = None
) -> dict[str, SampleStats]:
    """Sufficient statistics of metric ``name`` per ``arm`` of ``window.source`` (the rows
    matching ``where``), summed in SQL around a per-arm shift."""
    src = window.source
    rows = select(src.c.customer_id, src.c.experiment_id, src.c.arm, src.c.assigned_at)
    a = (rows.where(where) if where is not None else rows).subquery("a")
    with engine.connect() as connection:
        firsts = select(a.c.arm, func.min(a.c.customer_id).label("customer_id")).group_by(a.c.arm)
        picked = firsts.subquery("firsts")
        reps = (
            select(a)
            .join(picked, and_(picked.c.arm == a.c.arm, picked.c.customer_id == a.c.customer_id))
            .subquery("reps")
        )
        ys, _ = shifts_of(connection, name, window, reps, None)
        groups = grouped_moments(connection, customer_values(name, window, a), ys)
    return {arm: m.sample() for arm, m in _per_arm(groups).items()}


def metric_values(
    engine: Engine, experiment_id: int, name: str, as_of: datetime, costs: Costs | None = None
) -> dict[int, tuple[str, float]]:
    """Per-customer (arm, value) of metric ``name``: for inspection and tests, not evaluation."""
    w = Window(as_of=as_of, days=CATALOGUE[name].window_days, costs=costs or Costs())
    pc = customer_values(name, w, experiment_rows(experiment_id, as_of, w.days)).subquery()
    with engine.connect() as connection:
        rows = connection.execute(select(pc.c.customer_id, pc.c.arm, pc.c.y))
        return {int(c): (arm, float(v)) for c, arm, v in rows}
