"""Per-customer features as of a moment, in SQL: the columns segment rules select on.

:func:`customer_features` builds one row per customer with a column per field of
:data:`experiments.rules.FIELDS` (labelled with the field name, dots kept). Each source table is
reduced to one row per customer in a grouped (or ranked) subquery and LEFT JOINed to the
customers, so the database does the work in a few passes whatever the number of customers; only
the subqueries the requested fields need are joined.

"As of" means only data before ``as_of`` counts: customers, subscriptions and cards that exist at
``as_of`` (created or started at or before it), events and due dates strictly before it, activity
windows half-open ``[as_of - 14d, as_of)``, risk scores computed at or before it. An invoice
is unpaid at ``as_of`` when it was due before it and paid (if ever) at or after it, whatever its
status today. The status is rewound to ``as_of`` from the moments the tables keep (see
:func:`_status_as_of`); the plan and price of a subscription are the values stored now (the
tables keep no history of them beyond the last change); the card on file is the newest card created by ``as_of`` that is still the default or was
replaced by a default card added after ``as_of``. Day counts are fractional days.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement, Select, Subquery
from sqlmodel.sql.sqltypes import UTCDateTime

from experiments.rule_ast import FIELDS, GRACE_PERIOD_DAYS
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.risk_tables import RiskScore
from models.sqltime import days_between, epoch_day

_customers: Table = Customer.__table__  # type: ignore[attr-defined]
_subscriptions: Table = Subscription.__table__  # type: ignore[attr-defined]
_invoices: Table = Invoice.__table__  # type: ignore[attr-defined]
_cards: Table = PaymentMethod.__table__  # type: ignore[attr-defined]
_activity: Table = ActivityEvent.__table__  # type: ignore[attr-defined]
_scores: Table = RiskScore.__table__  # type: ignore[attr-defined]

CustomerFilter = Callable[[ColumnElement[Any]], ColumnElement[bool]]
_ACTIVE_KINDS = ("login", "feature_use")
_UNPAID_STATUSES = ("failed", "open")
_REWOUND_STATUSES = ("active", "past_due", "paused", "canceled")
_INTERVAL_RANK = {"month": 1, "quarter": 2, "year": 3}


def grace_period_days() -> float:
    """The dunning grace period: ``RETAIN_GRACE_PERIOD_DAYS`` or :data:`GRACE_PERIOD_DAYS`."""
    raw = os.environ.get("RETAIN_GRACE_PERIOD_DAYS", "").strip()
    if not raw:
        return GRACE_PERIOD_DAYS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3650:
        raise ValueError(
            f"RETAIN_GRACE_PERIOD_DAYS must be a number of days from 0 to 3650, not {raw!r}"
        )
    return value


class _Sources:
    """The per-customer subqueries a set of features needs, built on first use."""

    def __init__(
        self,
        as_of: datetime,
        customer_ids: Sequence[int] | None,
        sample: CustomerFilter | None = None,
    ) -> None:
        if as_of.utcoffset() is None:
            raise ValueError(f"as_of must be timezone-aware (UTC), got {as_of!r}")
        self.as_of = as_of
        self.customer_ids = customer_ids
        self.sample = sample
        self.joined: dict[str, Subquery] = {}

    def at(self, delta_days: int = 0) -> ColumnElement[datetime]:
        """``as_of - delta_days`` as a bound parameter (window bounds are computed in Python)."""
        return literal(self.as_of - timedelta(days=delta_days), UTCDateTime())

    def _only_wanted(self, table: Table) -> ColumnElement[bool]:
        wanted = true() if self.sample is None else self.sample(table.c.customer_id)
        if self.customer_ids is None:
            return wanted
        return and_(wanted, table.c.customer_id.in_(list(self.customer_ids)))

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
    def scores(self) -> Subquery:
        return self._once("scores", self._latest_score)

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
        columns = (
            "status",
            "plan",
            "billing_interval",
            "mrr_cents",
            "current_period_end",
            "upcoming_invoice_at",
        )
        history = ("plan_changed_at", "previous_mrr_cents", "previous_billing_interval")
        moments = ("paused_at", "canceled_at", "updated_at")
        where = s.c.started_at <= self.at()
        return self._latest(s, "started_at", where, *columns, *history, *moments)

    def _latest_score(self) -> Subquery:
        r = _scores
        return self._latest(r, "as_of", r.c.as_of <= self.at(), "churn_risk", "decile")

    def _default_card(self) -> Subquery:
        # The default flag is today's: a card replaced after as_of was the default then (only a
        # card that is still default, or was superseded by a default card added after as_of).
        p, later = _cards, _cards.alias("later_card")
        superseded_later = exists().where(
            later.c.customer_id == p.c.customer_id,
            later.c.is_default.is_(true()),
            later.c.created_at > self.at(),
        )
        default_then = or_(p.c.is_default.is_(true()), superseded_later)
        where = and_(default_then, p.c.created_at <= self.at())
        return self._latest(p, "created_at", where, "expires_on")

    def _unpaid_invoices(self) -> Subquery:
        # Unpaid at as_of: still failed or open, or paid only at or after as_of (a recovered
        # invoice was owed then; its status says "paid" today).
        i = _invoices
        unpaid = or_(
            and_(
                i.c.status.in_(_UNPAID_STATUSES),
                or_(i.c.paid_at.is_(None), i.c.paid_at >= self.at()),
            ),
            and_(i.c.status == "paid", i.c.paid_at >= self.at()),
        )
        charge_failed = or_(i.c.status == "failed", i.c.attempts > 1)
        recent = i.c.due_at >= self.at(30)
        return (
            select(
                i.c.customer_id,
                func.sum(case((unpaid, 1), else_=0)).label("failed_invoices"),
                func.min(case((unpaid, i.c.due_at), else_=None)).label("oldest_unpaid_due"),
                func.sum(case((and_(recent, charge_failed), 1), else_=0)).label(
                    "failed_payments_30d"
                ),
                func.sum(case((and_(unpaid, charge_failed), 1), else_=0)).label("in_dunning"),
            )
            .where(i.c.due_at < self.at(), or_(unpaid, recent), self._only_wanted(i))
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
        milestone = a.c.kind == "milestone"
        onboarded = and_(milestone, a.c.name == "onboarding_completed")
        return (
            select(
                a.c.customer_id,
                func.max(case((active, a.c.occurred_at))).label("last_active_at"),
                func.max(case((onboarded, 1), else_=0)).label("onboarded"),
                func.count(case((milestone, a.c.name)).distinct()).label("milestones"),
            )
            .where(a.c.occurred_at < self.at(), or_(active, milestone), self._only_wanted(a))
            .group_by(a.c.customer_id)
            .subquery("activity_history")
        )


def _status_as_of(s: _Sources) -> ColumnElement[Any]:
    """The subscription's status at ``as_of``, rewound from today's with the moments kept.

    Canceled once ``canceled_at`` has passed; paused when paused now and since before ``as_of``;
    today's status when an import, sync or webhook wrote it (``updated_at``) at or before
    ``as_of``: the source said so then, whether or not its invoices were imported; otherwise an
    active, past-due, paused or later-canceled subscription was ``past_due`` while a charge had
    failed on an invoice unpaid at ``as_of``, and ``active`` if not. Other statuses (trialing,
    Stripe's unpaid or incomplete) are today's: the tables keep no trial end.
    """
    sub = s.subscription.c
    rewound = sub.status.in_(_REWOUND_STATUSES)
    dunning = func.coalesce(s.invoices.c.in_dunning, 0) > 0
    return case(
        (sub.canceled_at <= s.at(), "canceled"),
        (and_(sub.status == "canceled", sub.canceled_at.is_(None)), "canceled"),
        (
            and_(sub.status == "paused", or_(sub.paused_at.is_(None), sub.paused_at <= s.at())),
            "paused",
        ),
        (sub.updated_at <= s.at(), sub.status),
        (and_(rewound, dunning), "past_due"),
        (rewound, "active"),
        else_=sub.status,
    )


def _plan_change_days(s: _Sources) -> ColumnElement[Any]:
    changed_at = s.subscription.c.plan_changed_at
    return case((changed_at < s.at(), days_between(s.at(), changed_at)), else_=None)


def _days_past_due(s: _Sources) -> ColumnElement[Any]:
    return days_between(s.at(), s.invoices.c.oldest_unpaid_due)


def _rank(interval: ColumnElement[Any]) -> ColumnElement[Any]:
    return case(*((interval == name, rank) for name, rank in _INTERVAL_RANK.items()), else_=None)


def _downgraded(s: _Sources) -> ColumnElement[Any]:
    sub = s.subscription.c
    changed = and_(sub.plan_changed_at < s.at(), sub.plan_changed_at >= s.at(90))
    return func.coalesce(and_(changed, sub.previous_mrr_cents > sub.mrr_cents), false())


def _shortened(s: _Sources) -> ColumnElement[Any]:
    sub = s.subscription.c
    shorter = _rank(sub.previous_billing_interval) > _rank(sub.billing_interval)
    return func.coalesce(and_(sub.plan_changed_at < s.at(), shorter), false())


def _contract_ends(s: _Sources) -> ColumnElement[Any]:
    sub = s.subscription.c
    term = and_(sub.billing_interval.in_(("quarter", "year")), _status_as_of(s) != "canceled")
    return case((term, days_between(sub.current_period_end, s.at())), else_=None)


def _expires_before_charge(s: _Sources) -> ColumnElement[Any]:
    """The card's last valid day is before the day of the next charge: the upcoming invoice's
    (``invoice.upcoming``) while it lies ahead, else the end of the current period."""
    sub = s.subscription
    upcoming = sub.c.upcoming_invoice_at
    charge = case((upcoming > s.at(), upcoming), else_=sub.c.current_period_end)
    before = and_(sub.c.status != "canceled", epoch_day(s.card.c.expires_on) < epoch_day(charge))
    return func.coalesce(before, false())


def _usage_trend(s: _Sources) -> ColumnElement[Any]:
    last = cast(func.coalesce(s.recent.c.usage_last_14d, 0), Float)
    prior = cast(s.recent.c.usage_prior_14d, Float)
    return last / func.nullif(prior, 0.0, type_=Float)


_c = _customers.c
_FEATURES: dict[str, Callable[[_Sources], ColumnElement[Any]]] = {
    "customer.country": lambda s: _c.country,
    "customer.locale": lambda s: _c.locale,
    "tenure_days": lambda s: days_between(s.at(), _c.created_at),
    "email_consent": lambda s: _c.email_consent,
    "sms_consent": lambda s: _c.sms_consent,
    "has_phone": lambda s: and_(_c.phone.is_not(None), _c.phone != ""),
    "subscription.status": _status_as_of,
    "subscription.plan": lambda s: s.subscription.c.plan,
    "subscription.billing_interval": lambda s: s.subscription.c.billing_interval,
    "subscription.mrr": lambda s: cast(s.subscription.c.mrr_cents, Float) / 100.0,
    "subscription.days_to_renewal": lambda s: days_between(
        s.subscription.c.current_period_end, s.at()
    ),
    "subscription.days_since_plan_change": _plan_change_days,
    "card_expires_in_days": lambda s: days_between(s.card.c.expires_on, s.at()),
    "card_expires_before_next_charge": _expires_before_charge,
    "failed_invoices": lambda s: func.coalesce(s.invoices.c.failed_invoices, 0),
    "failed_payments_30d": lambda s: func.coalesce(s.invoices.c.failed_payments_30d, 0),
    "invoice_past_due": lambda s: func.coalesce(s.invoices.c.failed_invoices, 0) > 0,
    "days_past_due": _days_past_due,
    "in_grace_period": lambda s: func.coalesce(_days_past_due(s) <= grace_period_days(), false()),
    "paused": lambda s: func.coalesce(_status_as_of(s) == "paused", false()),
    "downgraded_90d": _downgraded,
    "billing_interval_shortened": _shortened,
    "contract_ends_in_days": _contract_ends,
    "usage_last_14d": lambda s: func.coalesce(s.recent.c.usage_last_14d, 0),
    "usage_prior_14d": lambda s: func.coalesce(s.recent.c.usage_prior_14d, 0),
    "usage_trend": _usage_trend,
    "days_since_last_active": lambda s: days_between(s.at(), s.history.c.last_active_at),
    "onboarding_completed": lambda s: func.coalesce(s.history.c.onboarded, 0) > 0,
    "milestones_completed": lambda s: func.coalesce(s.history.c.milestones, 0),
    "support_tickets_30d": lambda s: func.coalesce(s.recent.c.support_tickets_30d, 0),
    "churn_risk": lambda s: s.scores.c.churn_risk,
    "churn_risk_decile": lambda s: s.scores.c.decile,
}
assert set(_FEATURES) == set(FIELDS), "every rule field needs a SQL definition"


def customer_features(
    as_of: datetime,
    *,
    fields: Collection[str] | None = None,
    customer_ids: Sequence[int] | None = None,
    sample: CustomerFilter | None = None,
) -> Select[Any]:
    """One row per customer existing at ``as_of``: ``customer_id`` and one column per field.

    ``fields`` limits the columns (and so the joined subqueries) to those a rule reads;
    ``customer_ids`` limits the rows (for inspection); ``sample`` (a condition on a customer id
    column) limits them inside every subquery too, so a sample costs its share of the work. Columns are labelled with the field name.
    """
    unknown = set(fields or ()) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    sources = _Sources(as_of, customer_ids, sample)
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
    if sample is not None:
        query = query.where(sample(_c.id))
    return query


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
