"""Metrics per assigned customer, in SQL, aggregated per arm into sufficient statistics.

Each catalogue metric (:mod:`experiments.metrics`) is an expression over one assignment row ``a``
(any selectable with ``experiment_id``, ``customer_id``, ``assigned_at`` and ``arm`` will do): its
window starts at ``a.assigned_at`` and lasts ``window_days``. Only customers whose window has ended
by ``as_of`` are counted (an immature window is neither a success nor a failure), and only events
before ``as_of`` count. The database returns one row per arm (n, sums, sums of squares and, for
CUPED, the cross-products with the pre-period value); no per-customer data is pulled into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, cast, exists, func, literal, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from experiments.cuped import PairedStats
from experiments.metrics import CATALOGUE
from experiments.spec import Costs
from experiments.stats import SampleStats
from models.bulk import table
from models.customer_data import ActivityEvent, Invoice, PaymentMethod, Subscription
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


def _payment_recovered(w: Window) -> Expression:
    """Unpaid at assignment (due before it, not paid before it, not voided), and an invoice of the
    customer paid inside the window."""
    inv, later = table(Invoice).alias("owed"), table(Invoice).alias("paid")
    start = w.source.c.assigned_at
    owed = exists().where(
        inv.c.customer_id == w.source.c.customer_id,
        inv.c.due_at < start,
        inv.c.status != "void",
        or_(inv.c.paid_at.is_(None), inv.c.paid_at >= start),
    )
    paid = exists().where(
        later.c.customer_id == w.source.c.customer_id,
        later.c.status == "paid",
        w.contains(later.c.paid_at),
    )
    return _flag(and_(owed, paid))


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
    "payment_recovered_14d": _payment_recovered,
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
