"""Metrics per assigned customer, in SQL, aggregated per arm into sufficient statistics.

Each catalogue metric (:mod:`experiments.metrics`) is an expression over one assignment row ``a``:
its window starts at ``a.assigned_at`` and lasts ``window_days``. Only customers whose window has
ended by ``as_of`` are counted (an immature window is neither a success nor a failure), and only
events before ``as_of`` count. The database returns one row per arm (n, sum, sum of squares); no
per-customer data is pulled into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Float, and_, case, cast, exists, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from experiments.metrics import CATALOGUE, MetricDefinition
from experiments.stats import SampleStats
from models.customer_data import ActivityEvent, Invoice, PaymentMethod, Subscription
from models.records import Assignment, OfferGrant, Suppression
from models.sqltime import days_between

Expression = ColumnElement[float]
Builder = Callable[[MetricDefinition, datetime], Expression]

A = Assignment.__table__.alias("a")  # type: ignore[attr-defined]


def _in_window(
    at: ColumnElement[datetime], window_days: int, as_of: datetime
) -> ColumnElement[bool]:
    return and_(
        at >= A.c.assigned_at,
        at < as_of,
        days_between(at, A.c.assigned_at) < window_days,
    )


def _flag(condition: ColumnElement[bool]) -> Expression:
    return cast(case((condition, 1), else_=0), Float)


def _card_updated(metric: MetricDefinition, as_of: datetime) -> Expression:
    pm = PaymentMethod.__table__  # type: ignore[attr-defined]
    return _flag(
        exists().where(
            pm.c.customer_id == A.c.customer_id,
            _in_window(pm.c.created_at, metric.window_days, as_of),
        )
    )


def _onboarding_completed(metric: MetricDefinition, as_of: datetime) -> Expression:
    ev = ActivityEvent.__table__  # type: ignore[attr-defined]
    return _flag(
        exists().where(
            ev.c.customer_id == A.c.customer_id,
            ev.c.kind == "milestone",
            ev.c.name == "onboarding_completed",
            _in_window(ev.c.occurred_at, metric.window_days, as_of),
        )
    )


def _offer_accepted(metric: MetricDefinition, as_of: datetime) -> Expression:
    og = OfferGrant.__table__  # type: ignore[attr-defined]
    return _flag(
        exists().where(
            og.c.experiment_id == A.c.experiment_id,
            og.c.customer_id == A.c.customer_id,
            _in_window(og.c.accepted_at, metric.window_days, as_of),
        )
    )


def _retained(metric: MetricDefinition, as_of: datetime) -> Expression:
    sub = Subscription.__table__  # type: ignore[attr-defined]
    return _flag(
        ~exists().where(
            sub.c.customer_id == A.c.customer_id,
            _in_window(sub.c.canceled_at, metric.window_days, as_of),
        )
    )


def _revenue(metric: MetricDefinition, as_of: datetime) -> Expression:
    inv = Invoice.__table__  # type: ignore[attr-defined]
    paid_cents = (
        select(func.coalesce(func.sum(inv.c.amount_cents), 0))
        .where(
            inv.c.customer_id == A.c.customer_id,
            inv.c.status == "paid",
            _in_window(inv.c.paid_at, metric.window_days, as_of),
        )
        .scalar_subquery()
    )
    return cast(cast(paid_cents, Float) / literal(100.0), Float)


def _unsubscribed(metric: MetricDefinition, as_of: datetime) -> Expression:
    sup = Suppression.__table__  # type: ignore[attr-defined]
    return _flag(
        exists().where(
            sup.c.customer_id == A.c.customer_id,
            _in_window(sup.c.created_at, metric.window_days, as_of),
        )
    )


BUILDERS: dict[str, Builder] = {
    "card_updated_14d": _card_updated,
    "onboarding_completed_14d": _onboarding_completed,
    "offer_accepted_14d": _offer_accepted,
    "retained_30d": _retained,
    "retained_60d": _retained,
    "retained_90d": _retained,
    "revenue_90d": _revenue,
    "unsubscribed_30d": _unsubscribed,
}


def metric_value(name: str, as_of: datetime) -> Expression:
    """The per-assignment SQL expression of metric ``name`` (over alias ``a`` of assignments)."""
    definition = CATALOGUE[name]
    return BUILDERS[name](definition, as_of)


def _matured(experiment_id: int, window_days: int, as_of: datetime) -> ColumnElement[bool]:
    return and_(
        A.c.experiment_id == experiment_id,
        days_between(literal(as_of, A.c.assigned_at.type), A.c.assigned_at) >= window_days,
    )


def arm_statistics(
    engine: Engine, experiment_id: int, name: str, as_of: datetime
) -> dict[str, SampleStats]:
    """Sufficient statistics (n, sum, sum of squares) of metric ``name`` per arm, from SQL."""
    value = metric_value(name, as_of).label("v")
    per_customer = (
        select(A.c.arm, value)
        .where(_matured(experiment_id, CATALOGUE[name].window_days, as_of))
        .subquery()
    )
    query = select(
        per_customer.c.arm,
        func.count(),
        func.coalesce(func.sum(per_customer.c.v), 0.0),
        func.coalesce(func.sum(per_customer.c.v * per_customer.c.v), 0.0),
    ).group_by(per_customer.c.arm)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        arm: SampleStats(n=int(n), sum=float(total), sum_squares=float(squares))
        for arm, n, total, squares in rows
    }


def metric_values(
    engine: Engine, experiment_id: int, name: str, as_of: datetime
) -> dict[int, tuple[str, float]]:
    """Per-customer (arm, value) of metric ``name``: for inspection and tests, not for evaluation."""
    value = metric_value(name, as_of).label("v")
    query = select(A.c.customer_id, A.c.arm, value).where(
        _matured(experiment_id, CATALOGUE[name].window_days, as_of)
    )
    with engine.connect() as connection:
        return {int(c): (arm, float(v)) for c, arm, v in connection.execute(query)}
