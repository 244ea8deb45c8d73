"""Per-customer features as of a moment, and segment rules compiled to SQL over them.

:func:`customer_features` builds one row per customer with a column per field of
:data:`experiments.rules.FIELDS` (labelled with the field name, dots kept). Each source table is
reduced to one row per customer in a grouped (or ranked) subquery and LEFT JOINed to the
customers, so the database does the work in a few passes whatever the number of customers; only
the subqueries the requested fields need are joined.

"As of" means only data before ``as_of`` counts: customers, subscriptions and cards that exist at
``as_of`` (created or started at or before it), events and due dates strictly before it, activity
windows half-open ``[as_of - 14d, as_of)``. The status, plan and price of a subscription are the
values stored now (the tables keep no history of them). Day counts are fractional days.

:func:`compile_rule` turns a parsed rule into a SQLAlchemy condition with every literal bound as a
parameter. Null semantics are two-valued, as the rule language documents: a comparison, list test
or arithmetic involving a null is false (SQL's unknown, coalesced to false under ``not``), so
``not (card_expires_in_days <= 30)`` selects customers without a card; division by zero is null.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Table,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Select, Subquery
from sqlalchemy.types import TypeEngine
from sqlmodel.sql.sqltypes import UTCDateTime

from experiments.rules import (
    FIELDS,
    And,
    BinOp,
    Compare,
    FieldRef,
    InList,
    IsNull,
    Literal_,
    Neg,
    Not,
    Or,
    Rule,
    rule_fields,
)
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.records import Assignment
from models.sqltime import days_between

_customers: Table = Customer.__table__  # type: ignore[attr-defined]
_subscriptions: Table = Subscription.__table__  # type: ignore[attr-defined]
_invoices: Table = Invoice.__table__  # type: ignore[attr-defined]
_cards: Table = PaymentMethod.__table__  # type: ignore[attr-defined]
_activity: Table = ActivityEvent.__table__  # type: ignore[attr-defined]
_assignments: Table = Assignment.__table__  # type: ignore[attr-defined]

_ACTIVE_KINDS = ("login", "feature_use")
_UNPAID_STATUSES = ("failed", "open")


class _Sources:
    """The per-customer subqueries a set of features needs, built on first use."""

    def __init__(self, as_of: datetime, customer_ids: Sequence[int] | None) -> None:
        if as_of.utcoffset() is None:
            raise ValueError(f"as_of must be timezone-aware (UTC), got {as_of!r}")
        self.as_of = as_of
        self.customer_ids = customer_ids
        self.joined: dict[str, Subquery] = {}

    def at(self, delta_days: int = 0) -> ColumnElement[datetime]:
        """``as_of - delta_days`` as a bound parameter (window bounds are computed in Python)."""
        return literal(self.as_of - timedelta(days=delta_days), UTCDateTime())

    def _only_wanted(self, table: Table) -> ColumnElement[bool]:
        if self.customer_ids is None:
            return true()
        return table.c.customer_id.in_(list(self.customer_ids))

    def _once(self, name: str, build: Callable[[], Subquery]) -> Subquery:
        if name not in self.joined:
            self.joined[name] = build()
        return self.joined[name]

    @property
    def subscription(self) -> Subquery:
        return self._once("subscription", self._current_subscription)

    @property
    def card(self) -> Subquery:
        return self._once("card", self._default_card)

    @property
    def invoices(self) -> Subquery:
        return self._once("invoices", self._unpaid_invoices)

    @property
    def recent(self) -> Subquery:
        return self._once("recent", self._recent_activity)

    @property
    def history(self) -> Subquery:
        return self._once("history", self._activity_history)

    def _latest(self, table: Table, order: str, where: ColumnElement[bool], *cols: str) -> Subquery:
        """Per customer, the row of ``table`` with the latest ``order`` (ties: highest id)."""
        rank = func.row_number().over(
            partition_by=table.c.customer_id, order_by=(table.c[order].desc(), table.c.id.desc())
        )
        ranked = (
            select(table.c.customer_id, *(table.c[c] for c in cols), rank.label("rank"))
            .where(where, self._only_wanted(table))
            .subquery(f"ranked_{table.name}")
        )
        return (
            select(ranked.c.customer_id, *(ranked.c[c] for c in cols))
            .where(ranked.c.rank == 1)
            .subquery(f"latest_{table.name}")
        )

    def _current_subscription(self) -> Subquery:
        s = _subscriptions
        columns = ("status", "plan", "billing_interval", "mrr_cents", "current_period_end")
        where = s.c.started_at <= self.at()
        return self._latest(s, "started_at", where, *columns, "plan_changed_at")

    def _default_card(self) -> Subquery:
        p = _cards
        where = and_(p.c.is_default.is_(true()), p.c.created_at <= self.at())
        return self._latest(p, "created_at", where, "expires_on")

    def _unpaid_invoices(self) -> Subquery:
        i = _invoices
        return (
            select(i.c.customer_id, func.count().label("failed_invoices"))
            .where(
                i.c.status.in_(_UNPAID_STATUSES),
                i.c.due_at < self.at(),
                or_(i.c.paid_at.is_(None), i.c.paid_at >= self.at()),
                self._only_wanted(i),
            )
            .group_by(i.c.customer_id)
            .subquery("unpaid_invoices")
        )

    def _recent_activity(self) -> Subquery:
        a = _activity
        active = a.c.kind.in_(_ACTIVE_KINDS)

        def total(condition: ColumnElement[bool], label: str) -> ColumnElement[Any]:
            return func.sum(case((condition, a.c.quantity), else_=0)).label(label)

        return (
            select(
                a.c.customer_id,
                total(and_(active, a.c.occurred_at >= self.at(14)), "usage_last_14d"),
                total(
                    and_(active, a.c.occurred_at >= self.at(28), a.c.occurred_at < self.at(14)),
                    "usage_prior_14d",
                ),
                total(a.c.kind == "support_ticket", "support_tickets_30d"),
            )
            .where(
                a.c.occurred_at >= self.at(30),
                a.c.occurred_at < self.at(),
                a.c.kind.in_((*_ACTIVE_KINDS, "support_ticket")),
                self._only_wanted(a),
            )
            .group_by(a.c.customer_id)
            .subquery("recent_activity")
        )

    def _activity_history(self) -> Subquery:
        a = _activity
        active = a.c.kind.in_(_ACTIVE_KINDS)
        onboarded = and_(a.c.kind == "milestone", a.c.name == "onboarding_completed")
        return (
            select(
                a.c.customer_id,
                func.max(case((active, a.c.occurred_at))).label("last_active_at"),
                func.max(case((onboarded, 1), else_=0)).label("onboarded"),
            )
            .where(a.c.occurred_at < self.at(), or_(active, onboarded), self._only_wanted(a))
            .group_by(a.c.customer_id)
            .subquery("activity_history")
        )


def _plan_change_days(s: _Sources) -> ColumnElement[Any]:
    changed_at = s.subscription.c.plan_changed_at
    return case((changed_at < s.at(), days_between(s.at(), changed_at)), else_=None)


_c = _customers.c
_FEATURES: dict[str, Callable[[_Sources], ColumnElement[Any]]] = {
    "customer.country": lambda s: _c.country,
    "customer.locale": lambda s: _c.locale,
    "tenure_days": lambda s: days_between(s.at(), _c.created_at),
    "email_consent": lambda s: _c.email_consent,
    "sms_consent": lambda s: _c.sms_consent,
    "has_phone": lambda s: and_(_c.phone.is_not(None), _c.phone != ""),
    "subscription.status": lambda s: s.subscription.c.status,
    "subscription.plan": lambda s: s.subscription.c.plan,
    "subscription.billing_interval": lambda s: s.subscription.c.billing_interval,
    "subscription.mrr": lambda s: cast(s.subscription.c.mrr_cents, Float) / 100.0,
    "subscription.days_to_renewal": lambda s: days_between(
        s.subscription.c.current_period_end, s.at()
    ),
    "subscription.days_since_plan_change": _plan_change_days,
    "card_expires_in_days": lambda s: days_between(s.card.c.expires_on, s.at()),
    "failed_invoices": lambda s: func.coalesce(s.invoices.c.failed_invoices, 0),
    "usage_last_14d": lambda s: func.coalesce(s.recent.c.usage_last_14d, 0),
    "usage_prior_14d": lambda s: func.coalesce(s.recent.c.usage_prior_14d, 0),
    "days_since_last_active": lambda s: days_between(s.at(), s.history.c.last_active_at),
    "onboarding_completed": lambda s: func.coalesce(s.history.c.onboarded, 0) > 0,
    "support_tickets_30d": lambda s: func.coalesce(s.recent.c.support_tickets_30d, 0),
}
assert set(_FEATURES) == set(FIELDS), "every rule field needs a SQL definition"


def customer_features(
    as_of: datetime,
    *,
    fields: Collection[str] | None = None,
    customer_ids: Sequence[int] | None = None,
) -> Select[Any]:
    """One row per customer existing at ``as_of``: ``customer_id`` and one column per field.

    ``fields`` limits the columns (and so the joined subqueries) to those a rule reads;
    ``customer_ids`` limits the rows (for inspection). Columns are labelled with the field name.
    """
    unknown = set(fields or ()) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    sources = _Sources(as_of, customer_ids)
    columns = [
        build(sources).label(name)
        for name, build in _FEATURES.items()
        if fields is None or name in fields
    ]
    joined = _customers
    for sub in sources.joined.values():
        joined = joined.outerjoin(sub, sub.c.customer_id == _c.id)  # type: ignore[assignment]
    query = select(_c.id.label("customer_id"), *columns).select_from(joined)
    query = query.where(_c.created_at <= sources.at())
    if customer_ids is not None:
        query = query.where(_c.id.in_(list(customer_ids)))
    return query


def compile_rule(rule: Rule, features: Subquery) -> ColumnElement[bool]:
    """The rule as a SQL condition over a :func:`customer_features` subquery (literals bound)."""
    match rule:
        case And(items):
            return and_(*(compile_rule(item, features) for item in items))
        case Or(items):
            return or_(*(compile_rule(item, features) for item in items))
        case Not(item):
            # two-valued logic: an unknown (null) condition counts as false before negation
            return not_(func.coalesce(compile_rule(item, features), false()))
        case Compare(op, left, right):
            return _COMPARISONS[op](_value(left, features), _value(right, features))
        case InList(expr, values, negated):
            column = _value(expr, features)
            return column.not_in(values) if negated else column.in_(values)
        case IsNull(expr, negated):
            column = _value(expr, features)
            return column.is_not(None) if negated else column.is_(None)
        case FieldRef(name) if FIELDS[name].type == "bool":
            return features.c[name]
        case Literal_(bool() as value):
            return true() if value else false()
    raise ValueError(f"not a condition: {rule!r}")


_COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _value(node: Rule, features: Subquery) -> ColumnElement[Any]:
    match node:
        case FieldRef(name):
            return features.c[name]
        case Literal_(value) if value is not None:
            return literal(value, _literal_type(value))
        case Neg(operand):
            return -_value(operand, features)
        case BinOp("/", left, right):
            # true division on both databases; x / 0 is null (PostgreSQL would raise)
            numerator = cast(_value(left, features), Float)
            return numerator / func.nullif(cast(_value(right, features), Float), 0.0, type_=Float)
        case BinOp("+", left, right):
            return _value(left, features) + _value(right, features)
        case BinOp("-", left, right):
            return _value(left, features) - _value(right, features)
        case BinOp("*", left, right):
            return _value(left, features) * _value(right, features)
    raise ValueError(f"not a value: {node!r}")


def _literal_type(value: int | float | str | bool) -> TypeEngine[Any]:
    if isinstance(value, bool):
        return Boolean()
    if isinstance(value, str):
        return String()
    return Integer() if isinstance(value, int) else Float()


def segment_query(
    rule: Rule,
    as_of: datetime,
    *,
    exclude_assigned_except: int | None = None,
    exclude_assigned: bool = False,
) -> Select[Any]:
    """``customer_id`` of the customers matching ``rule`` at ``as_of``, ordered by id.

    With ``exclude_assigned``, customers with an assignment in any experiment other than
    ``exclude_assigned_except`` (all experiments when it is None) are left out.
    """
    features = customer_features(as_of, fields=rule_fields(rule)).subquery("features")
    query = select(features.c.customer_id).where(compile_rule(rule, features))
    if exclude_assigned:
        a = _assignments
        elsewhere = select(a.c.id).where(a.c.customer_id == features.c.customer_id)
        if exclude_assigned_except is not None:
            elsewhere = elsewhere.where(a.c.experiment_id != exclude_assigned_except)
        query = query.where(~elsewhere.exists())
    return query.order_by(features.c.customer_id)


def select_segment(
    engine: Engine,
    rule: Rule,
    as_of: datetime,
    *,
    experiment_id: int | None = None,
    exclude_assigned: bool = False,
) -> list[int]:
    """The ids of the customers matching ``rule`` at ``as_of`` (see :func:`segment_query`)."""
    query = segment_query(
        rule, as_of, exclude_assigned_except=experiment_id, exclude_assigned=exclude_assigned
    )
    with engine.connect() as connection:
        return [int(customer_id) for customer_id in connection.scalars(query)]


def feature_rows(
    engine: Engine, as_of: datetime, customer_ids: Sequence[int] | None = None
) -> list[dict[str, object]]:
    """Every field of the given customers (default: all) at ``as_of``, ordered by customer id.

    Numbers come back as int or float, booleans as bool, missing values as None. A long id list
    is read in chunks, within the databases' limits on bound parameters.
    """
    if customer_ids is None:
        chunks: list[list[int] | None] = [None]
    else:
        ids = sorted(set(customer_ids))
        chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
    rows: list[dict[str, object]] = []
    with engine.connect() as connection:
        for chunk in chunks:
            query = customer_features(as_of, customer_ids=chunk).order_by("customer_id")
            for row in connection.execute(query).mappings():
                rows.append({key: _plain(key, value) for key, value in row.items()})
    return rows


_CHUNK = 1000  # ids per query; each subquery binds them once (SQLite allows 32766 parameters)


def _plain(key: str, value: object) -> object:
    info = FIELDS.get(key)
    if value is None or info is None:
        return value
    if info.type == "bool":
        return bool(value)
    return float(value) if isinstance(value, Decimal) else value
