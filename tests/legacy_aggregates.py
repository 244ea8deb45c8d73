"""The per-arm aggregates as computed before issue 12 (a correlated subquery per customer and
reference), kept as the reference the single-pass aggregates must equal to 1e-9."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Integer, and_, case, cast, exists, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from experiments.stats.cuped import PairedStats
from experiments.metrics import CATALOGUE
from experiments.spec import Costs
from experiments.stats import SampleStats
from experiments.stats.survival import SurvivalCounts
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.records import Assignment, Message, OfferGrant, Suppression
from models.sqltime import days_between

Expression = ColumnElement[float]

ASSIGNMENTS = table(Assignment).alias("a")


@dataclass(frozen=True)
class Window:
    """Where a metric is measured: ``[start + offset, start + offset + days)`` for each row of
    ``source`` (``start`` is its ``assigned_at``), counting only events before ``as_of``."""

    as_of: datetime
    days: float
    offset: float = 0.0
    source: Any = ASSIGNMENTS
    costs: Costs = field(default_factory=Costs)

    def contains(self, at: ColumnElement[datetime]) -> ColumnElement[bool]:
        elapsed = days_between(at, self.source.c.assigned_at)
        return and_(at < self.as_of, elapsed >= self.offset, elapsed < self.offset + self.days)


def _flag(condition: ColumnElement[bool]) -> Expression:
    return cast(case((condition, 1), else_=0), Float)


def _card_updated(w: Window) -> Expression:
    pm = table(PaymentMethod)
    return _flag(
        exists().where(pm.c.customer_id == w.source.c.customer_id, w.contains(pm.c.created_at))
    )


def _onboarding_completed(w: Window) -> Expression:
    ev = table(ActivityEvent)
    return _flag(
        exists().where(
            ev.c.customer_id == w.source.c.customer_id,
            ev.c.kind == "milestone",
            ev.c.name == "onboarding_completed",
            w.contains(ev.c.occurred_at),
        )
    )


def _offer_accepted(w: Window) -> Expression:
    og = table(OfferGrant)
    return _flag(
        exists().where(
            og.c.experiment_id == w.source.c.experiment_id,
            og.c.customer_id == w.source.c.customer_id,
            w.contains(og.c.accepted_at),
        )
    )


def _retained(w: Window) -> Expression:
    sub = table(Subscription)
    return _flag(
        ~exists().where(sub.c.customer_id == w.source.c.customer_id, w.contains(sub.c.canceled_at))
    )


def _revenue(w: Window) -> Expression:
    inv = table(Invoice)
    paid_cents = (
        select(func.coalesce(func.sum(inv.c.amount_cents), 0))
        .where(
            inv.c.customer_id == w.source.c.customer_id,
            inv.c.status == "paid",
            w.contains(inv.c.paid_at),
        )
        .scalar_subquery()
    )
    return cast(cast(paid_cents, Float) / literal(100.0), Float)


def _net_revenue(w: Window) -> Expression:
    """Revenue minus what this experiment spent on the customer: messages sent and offers
    accepted, at the costs configured in the spec."""
    msg, og = table(Message), table(OfferGrant)
    per_channel = case(
        (msg.c.channel == "email", literal(w.costs.email)),
        (msg.c.channel == "sms", literal(w.costs.sms)),
        else_=literal(0.0),
    )
    message_cost = (
        select(func.coalesce(func.sum(per_channel), 0.0))
        .where(
            msg.c.experiment_id == w.source.c.experiment_id,
            msg.c.customer_id == w.source.c.customer_id,
            msg.c.status == "sent",
            w.contains(msg.c.sent_at),
        )
        .scalar_subquery()
    )
    whens = [(og.c.offer_kind == kind, literal(cost)) for kind, cost in w.costs.offer.items()]
    per_offer = case(*whens, else_=literal(0.0)) if whens else literal(0.0)
    offer_cost = (
        select(func.coalesce(func.sum(per_offer), 0.0))
        .where(
            og.c.experiment_id == w.source.c.experiment_id,
            og.c.customer_id == w.source.c.customer_id,
            w.contains(og.c.accepted_at),
        )
        .scalar_subquery()
    )
    return cast(_revenue(w) - cast(message_cost, Float) - cast(offer_cost, Float), Float)


def _unsubscribed(w: Window) -> Expression:
    sup = table(Suppression)
    return _flag(
        exists().where(sup.c.customer_id == w.source.c.customer_id, w.contains(sup.c.created_at))
    )


BUILDERS: dict[str, Callable[[Window], Expression]] = {
    "card_updated_14d": _card_updated,
    "onboarding_completed_14d": _onboarding_completed,
    "offer_accepted_14d": _offer_accepted,
    "retained_30d": _retained,
    "retained_60d": _retained,
    "retained_90d": _retained,
    "revenue_90d": _revenue,
    "net_revenue_90d": _net_revenue,
    "unsubscribed_30d": _unsubscribed,
}


def metric_value(name: str, window: Window) -> Expression:
    """The per-row SQL expression of metric ``name`` over ``window.source``."""
    return BUILDERS[name](window)


def _window(name: str, as_of: datetime, costs: Costs | None) -> Window:
    return Window(as_of=as_of, days=CATALOGUE[name].window_days, costs=costs or Costs())


def _matured(experiment_id: int, w: Window) -> ColumnElement[bool]:
    a = w.source
    return and_(
        a.c.experiment_id == experiment_id,
        days_between(literal(w.as_of, a.c.assigned_at.type), a.c.assigned_at) >= w.offset + w.days,
    )


def arm_statistics(
    engine: Engine, experiment_id: int, name: str, as_of: datetime, costs: Costs | None = None
) -> dict[str, SampleStats]:
    """Sufficient statistics (n, sum, sum of squares) of metric ``name`` per arm, from SQL."""
    w = _window(name, as_of, costs)
    return window_statistics(engine, name, w, _matured(experiment_id, w))


def window_statistics(
    engine: Engine, name: str, window: Window, where: ColumnElement[bool] | None = None
) -> dict[str, SampleStats]:
    """Sufficient statistics of metric ``name`` per ``arm`` of ``window.source`` (the rows
    matching ``where``), summed in SQL."""
    value = metric_value(name, window).label("v")
    per_customer = select(window.source.c.arm, value)
    if where is not None:
        per_customer = per_customer.where(where)
    sub = per_customer.subquery()
    v = sub.c.v
    query = select(
        sub.c.arm,
        func.count(),
        func.coalesce(func.sum(v), 0.0),
        func.coalesce(func.sum(v * v), 0.0),
    ).group_by(sub.c.arm)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        arm: SampleStats(n=int(n), sum=float(total), sum_squares=float(squares))
        for arm, n, total, squares in rows
    }


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
    w = _window(name, as_of, costs)
    lookback = float(lookback_days or w.days)
    pre = replace(w, offset=-lookback, days=lookback)
    y = metric_value(name, w).label("y")
    x = metric_value(name, pre).label("x")
    per_customer = select(w.source.c.arm, x, y).where(_matured(experiment_id, w)).subquery()
    px, py = per_customer.c.x, per_customer.c.y
    query = select(
        per_customer.c.arm,
        func.count(),
        *(func.coalesce(func.sum(e), 0.0) for e in (px, px * px, py, py * py, px * py)),
    ).group_by(per_customer.c.arm)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        arm: PairedStats(
            n=int(n),
            sum_x=float(sx),
            sum_x2=float(sxx),
            sum_y=float(sy),
            sum_y2=float(syy),
            sum_xy=float(sxy),
        )
        for arm, n, sx, sxx, sy, syy, sxy in rows
    }


def metric_values(
    engine: Engine, experiment_id: int, name: str, as_of: datetime, costs: Costs | None = None
) -> dict[int, tuple[str, float]]:
    """Per-customer (arm, value) of metric ``name``: for inspection and tests, not evaluation."""
    w = _window(name, as_of, costs)
    value = metric_value(name, w).label("v")
    query = select(w.source.c.customer_id, w.source.c.arm, value).where(_matured(experiment_id, w))
    with engine.connect() as connection:
        return {int(c): (arm, float(v)) for c, arm, v in connection.execute(query)}


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


USAGE_DAYS = 28


def _covariates() -> dict[str, ColumnElement[float]]:
    customers, subs, events = table(Customer), table(Subscription), table(ActivityEvent)
    tenure = (
        select(days_between(ASSIGNMENTS.c.assigned_at, customers.c.created_at))
        .where(customers.c.id == ASSIGNMENTS.c.customer_id)
        .scalar_subquery()
    )
    mrr = (
        select(cast(subs.c.mrr_cents, Float) / literal(100.0))
        .where(
            subs.c.customer_id == ASSIGNMENTS.c.customer_id,
            subs.c.started_at <= ASSIGNMENTS.c.assigned_at,
        )
        .order_by(subs.c.started_at.desc(), subs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    elapsed = days_between(ASSIGNMENTS.c.assigned_at, events.c.occurred_at)
    usage = (
        select(func.coalesce(func.sum(events.c.quantity), 0))
        .where(
            events.c.customer_id == ASSIGNMENTS.c.customer_id,
            events.c.kind.in_(["login", "feature_use"]),
            and_(elapsed > 0, elapsed <= USAGE_DAYS),
        )
        .scalar_subquery()
    )
    consent = (
        select(case((customers.c.sms_consent, 1.0), else_=0.0))
        .where(customers.c.id == ASSIGNMENTS.c.customer_id)
        .scalar_subquery()
    )
    return {
        "tenure_days": cast(tenure, Float),
        "mrr": cast(func.coalesce(mrr, 0.0), Float),
        f"usage_prior_{USAGE_DAYS}d": cast(usage, Float),
        "sms_consent": cast(consent, Float),
    }


def covariate_statistics(engine: Engine, experiment_id: int) -> dict[str, dict[str, SampleStats]]:
    """covariate -> arm -> sufficient statistics, all aggregated in SQL."""
    covariates = _covariates()
    per_customer = (
        select(ASSIGNMENTS.c.arm, *(expr.label(name) for name, expr in covariates.items()))
        .where(ASSIGNMENTS.c.experiment_id == experiment_id)
        .subquery()
    )
    sums = []
    for name in covariates:
        v = per_customer.c[name]
        sums += [func.coalesce(func.sum(v), 0.0), func.coalesce(func.sum(v * v), 0.0)]
    query = select(per_customer.c.arm, func.count(), *sums).group_by(per_customer.c.arm)
    out: dict[str, dict[str, SampleStats]] = {name: {} for name in covariates}
    with engine.connect() as connection:
        for arm, n, *values in connection.execute(query):
            for i, name in enumerate(covariates):
                out[name][arm] = SampleStats(
                    n=int(n), sum=float(values[2 * i]), sum_squares=float(values[2 * i + 1])
                )
    return out
