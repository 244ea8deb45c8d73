"""Pre-assignment covariates per arm (sufficient statistics), for the covariate balance table.

Each covariate is measured at the customer's own assignment time, so nothing the experiment did
can have moved it. A large standardised difference between arms means the randomisation, or the
data, is off.
"""

from __future__ import annotations

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from experiments.stats import SampleStats
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Subscription
from models.metric_sql import ASSIGNMENTS as A
from models.sqltime import days_between

USAGE_DAYS = 28


def _covariates() -> dict[str, ColumnElement[float]]:
    customers, subs, events = table(Customer), table(Subscription), table(ActivityEvent)
    tenure = (
        select(days_between(A.c.assigned_at, customers.c.created_at))
        .where(customers.c.id == A.c.customer_id)
        .scalar_subquery()
    )
    mrr = (
        select(cast(subs.c.mrr_cents, Float) / literal(100.0))
        .where(subs.c.customer_id == A.c.customer_id, subs.c.started_at <= A.c.assigned_at)
        .order_by(subs.c.started_at.desc(), subs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    elapsed = days_between(A.c.assigned_at, events.c.occurred_at)
    usage = (
        select(func.coalesce(func.sum(events.c.quantity), 0))
        .where(
            events.c.customer_id == A.c.customer_id,
            events.c.kind.in_(["login", "feature_use"]),
            and_(elapsed > 0, elapsed <= USAGE_DAYS),
        )
        .scalar_subquery()
    )
    consent = (
        select(case((customers.c.sms_consent, 1.0), else_=0.0))
        .where(customers.c.id == A.c.customer_id)
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
        select(A.c.arm, *(expr.label(name) for name, expr in covariates.items()))
        .where(A.c.experiment_id == experiment_id)
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
