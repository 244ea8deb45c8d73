"""What ``retain segment`` shows before an experiment runs: how many customers its rule selects,
how many enter per day, their make-up by plan, country and churn-risk decile, how many already
sit in running experiments, and a sample of them. All counts are grouped in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Subquery

from experiments.rules import Rule, rule_fields
from models.bulk import table
from models.customer_data import Customer
from models.features import customer_features
from models.records import Assignment, Experiment
from models.segments import compile_rule

INFLOW_DAYS = 7
_MAKE_UP = ("subscription.plan", "customer.country", "churn_risk_decile")
_HASH = 2654435761


@dataclass(frozen=True)
class SampleCustomer:
    customer_id: int
    external_id: str
    name: str
    email: str | None
    plan: str | None
    country: str | None
    churn_risk: float | None


@dataclass(frozen=True)
class SegmentPreview:
    size: int
    inflow_per_day: float
    make_up: dict[str, list[tuple[Any, int]]]  # field -> (value, customers), largest first
    overlap: list[tuple[str, int]]  # running experiment key -> customers of the segment in it
    sample: list[SampleCustomer]


def _members(rule: Rule, as_of: datetime, name: str) -> Subquery:
    fields = rule_fields(rule) | set(_MAKE_UP) | {"churn_risk"}
    features = customer_features(as_of, fields=fields).subquery(f"{name}_features")
    return select(features).where(compile_rule(rule, features)).subquery(name)


def preview_segment(
    engine: Engine, rule: Rule, as_of: datetime, sample: int = 10
) -> SegmentPreview:
    """The preview of ``rule`` at ``as_of`` (see the module)."""
    now = _members(rule, as_of, "members")
    before = _members(rule, as_of - timedelta(days=INFLOW_DAYS), "members_before")
    with engine.connect() as connection:
        size = int(connection.scalar(select(func.count()).select_from(now)) or 0)
        entered = (
            select(func.count())
            .select_from(now)
            .where(now.c.customer_id.not_in(select(before.c.customer_id)))
        )
        inflow = int(connection.scalar(entered) or 0) / INFLOW_DAYS
        make_up = {field: _group(connection, now, field) for field in _MAKE_UP}
        overlap = _overlap(connection, now)
        rows = _sample(connection, now, sample)
    return SegmentPreview(size, inflow, make_up, overlap, rows)


def _group(connection: Connection, members: Subquery, field: str) -> list[tuple[Any, int]]:
    column = members.c[field]
    count = func.count().label("n")
    query = select(column, count).group_by(column).order_by(count.desc(), column)
    return [(value, int(n)) for value, n in connection.execute(query)]


def _overlap(connection: Connection, members: Subquery) -> list[tuple[str, int]]:
    a, e = table(Assignment), table(Experiment)
    count = func.count().label("n")
    query = (
        select(e.c.key, count)
        .select_from(members.join(a, a.c.customer_id == members.c.customer_id))
        .join(e, e.c.id == a.c.experiment_id)
        .where(e.c.status == "running")
        .group_by(e.c.key)
        .order_by(count.desc(), e.c.key)
    )
    return [(str(key), int(n)) for key, n in connection.execute(query)]


def _sample(connection: Connection, members: Subquery, limit: int) -> list[SampleCustomer]:
    c = table(Customer)
    order = (members.c.customer_id * literal(_HASH)) % 1_000_003
    query = (
        select(
            c.c.id, c.c.external_id, c.c.name, c.c.email,
            members.c["subscription.plan"], members.c["customer.country"], members.c.churn_risk,
        )
        .select_from(members.join(c, c.c.id == members.c.customer_id))
        .order_by(order, c.c.id)
        .limit(limit)
    )  # fmt: skip
    return [
        SampleCustomer(int(i), str(x), str(n), e, p, k, None if r is None else float(r))
        for i, x, n, e, p, k, r in connection.execute(query)
    ]
