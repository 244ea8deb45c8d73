"""Pre-assignment covariates per arm (sufficient statistics), for the covariate balance table.

Each covariate is measured at the customer's own assignment time, so nothing the experiment did
can have moved it (except ``sms_consent``, which is the customer's current consent). A large standardised difference between arms means the randomisation, or the
data, is off.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import FromClause, Select
from sqlalchemy.sql.elements import ColumnElement

from experiments.stats import SampleStats
from models.bulk import table
from models.customer_data import ActivityEvent, Customer, Subscription
from models.metric_sql import EPOCH, arms_of, experiment_rows, representatives
from models.moments import Moments
from models.sqltime import days_between, epoch_day

USAGE_DAYS = 28


def _covariate_rows(a: FromClause) -> Select:
    """Per row of ``a``: every covariate, from joins against per-customer pre-aggregates."""
    customers, subs, events = table(Customer), table(Subscription), table(ActivityEvent)
    # The subscription in force at assignment: the latest started (ties: the highest id).
    ranked = (
        select(
            a.c.customer_id,
            subs.c.mrr_cents,
            func.row_number()
            .over(
                partition_by=a.c.customer_id,
                order_by=(subs.c.started_at.desc(), subs.c.id.desc()),
            )
            .label("rank"),
        )
        .select_from(a.join(subs, subs.c.customer_id == a.c.customer_id))
        .where(subs.c.started_at <= a.c.assigned_at)
        .subquery("ranked")
    )
    current = (
        select(ranked.c.customer_id, ranked.c.mrr_cents).where(ranked.c.rank == 1).subquery("mrr")
    )
    elapsed = days_between(a.c.assigned_at, events.c.occurred_at)
    usage = (
        select(a.c.customer_id, func.sum(events.c.quantity).label("quantity"))
        .select_from(a.join(events, events.c.customer_id == a.c.customer_id))
        .where(
            events.c.kind.in_(["login", "feature_use"]),
            and_(elapsed > 0, elapsed <= USAGE_DAYS),
        )
        .group_by(a.c.customer_id)
        .subquery("usage")
    )
    values: dict[str, ColumnElement[float]] = {
        "tenure_days": cast(days_between(a.c.assigned_at, customers.c.created_at), Float),
        "mrr": cast(
            func.coalesce(cast(current.c.mrr_cents, Float) / literal(100.0), literal(0.0)), Float
        ),
        f"usage_prior_{USAGE_DAYS}d": cast(func.coalesce(usage.c.quantity, literal(0)), Float),
        "sms_consent": cast(case((customers.c.sms_consent, 1.0), else_=0.0), Float),
    }
    joined = (
        a.outerjoin(customers, customers.c.id == a.c.customer_id)
        .outerjoin(current, current.c.customer_id == a.c.customer_id)
        .outerjoin(usage, usage.c.customer_id == a.c.customer_id)
    )
    return select(
        a.c.customer_id, a.c.arm, a.c.assigned_at, *(v.label(k) for k, v in values.items())
    ).select_from(joined)


COVARIATES = ("tenure_days", "mrr", f"usage_prior_{USAGE_DAYS}d", "sms_consent")


def covariate_moments(
    connection: Connection, experiment_id: int, arms: list[str], since: date | None = None
) -> dict[str, dict[tuple[str, date], Moments]]:
    """covariate -> (arm, assignment day) -> moments around the arm's first customer's value."""
    reps = representatives(connection, experiment_id, arms)
    firsts = select(_covariate_rows(experiment_rows(experiment_id, customers=reps)).subquery())
    shifts: dict[str, dict[str, float]] = {name: {} for name in COVARIATES}
    for row in connection.execute(firsts).mappings():
        for name in COVARIATES:
            shifts[name][row["arm"]] = float(row[name]) if row[name] is not None else 0.0
    a = experiment_rows(experiment_id, since=since)
    pc = _covariate_rows(a).subquery("pc")
    day = epoch_day(pc.c.assigned_at).label("day")
    sums: list[Any] = []
    for name in COVARIATES:
        d = pc.c[name] - case(
            *((pc.c.arm == arm, literal(s)) for arm, s in shifts[name].items()),
            else_=literal(0.0),
        )
        sums += [func.sum(d), func.sum(d * d)]
    query = select(pc.c.arm, day, func.count(), *sums).group_by(pc.c.arm, day)
    out: dict[str, dict[tuple[str, date], Moments]] = {name: {} for name in COVARIATES}
    for arm, d, n, *values in connection.execute(query):
        key = (str(arm), EPOCH + timedelta(days=int(d)))
        for i, name in enumerate(COVARIATES):
            out[name][key] = Moments(
                n=int(n),
                shift_y=shifts[name].get(arm, 0.0),
                sum_y=float(values[2 * i] or 0),
                sum_y2=float(values[2 * i + 1] or 0),
            )
    return out


def per_arm(
    groups: dict[str, dict[tuple[str, date], Moments]],
) -> dict[str, dict[str, SampleStats]]:
    """covariate -> arm -> sufficient statistics, from the per-day moments."""
    out: dict[str, dict[str, SampleStats]] = {}
    for name, by_day in groups.items():
        arms: dict[str, Moments] = {}
        for (arm, _day), m in sorted(by_day.items()):
            arms[arm] = arms[arm] + m if arm in arms else m
        out[name] = {arm: m.sample() for arm, m in arms.items()}
    return out


def covariate_statistics(engine: Engine, experiment_id: int) -> dict[str, dict[str, SampleStats]]:
    """covariate -> arm -> sufficient statistics, all aggregated in SQL."""
    with engine.connect() as connection:
        arms = arms_of(connection, experiment_id)
        return per_arm(covariate_moments(connection, experiment_id, arms))
