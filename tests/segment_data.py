"""Hand-built customer data, an independent Python recount of its features and a reference
evaluator of the rule AST: the yardsticks the segment and rule tests compare SQL against."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from experiments.rules import (
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
)
from models.customer_data import ActivityEvent, Customer, Invoice, PaymentMethod, Subscription
from models.risk_tables import RiskModel, RiskScore

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


# --- Hand-built data -------------------------------------------------------------------------------


@dataclass
class Data:
    customers: list[Customer] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    cards: list[PaymentMethod] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    activity: list[ActivityEvent] = field(default_factory=list)
    models: list[RiskModel] = field(default_factory=list)
    scores: list[RiskScore] = field(default_factory=list)

    def customer(self, cid: int, created_at: datetime, **kw: Any) -> None:
        kw.setdefault("name", f"Customer {cid}")
        self.customers.append(Customer(id=cid, external_id=f"c{cid}", created_at=created_at, **kw))

    def subscription(self, sid: int, cid: int, started_at: datetime, **kw: Any) -> None:
        kw.setdefault("plan", "basic")
        kw.setdefault("billing_interval", "month")
        kw.setdefault("mrr_cents", 1900)
        kw.setdefault("status", "active")
        kw.setdefault("current_period_end", started_at + 30 * DAY)
        self.subscriptions.append(
            Subscription(id=sid, customer_id=cid, started_at=started_at, **kw)
        )

    def card(
        self, pid: int, cid: int, expires_on: date, created_at: datetime, default: bool
    ) -> None:
        self.cards.append(
            PaymentMethod(
                id=pid,
                customer_id=cid,
                last4="4242",
                exp_month=expires_on.month,
                exp_year=expires_on.year,
                expires_on=expires_on,
                is_default=default,
                created_at=created_at,
            )
        )

    def invoice(
        self,
        cid: int,
        status: str,
        due_at: datetime,
        paid_at: datetime | None = None,
        attempts: int = 1,
    ) -> None:
        self.invoices.append(
            Invoice(
                customer_id=cid,
                amount_cents=1900,
                status=status,
                due_at=due_at,
                paid_at=paid_at,
                attempts=attempts,
            )
        )

    def score(
        self, sid: int, model: int, cid: int, as_of: datetime, risk: float, decile: int
    ) -> None:
        if not any(m.id == model for m in self.models):
            self.models.append(
                RiskModel(
                    id=model,
                    version=f"v{model}",
                    horizon_days=30,
                    train_start=as_of,
                    train_end=as_of,
                    n_train=1,
                    trained_at=as_of,
                    model_json="{}",
                )
            )
        self.scores.append(
            RiskScore(
                id=sid, model_id=model, customer_id=cid, as_of=as_of, churn_risk=risk, decile=decile
            )
        )

    def event(
        self, cid: int, kind: str, at: datetime, quantity: int = 1, name: str | None = None
    ) -> None:
        self.activity.append(
            ActivityEvent(customer_id=cid, kind=kind, name=name, occurred_at=at, quantity=quantity)
        )


def build_data() -> Data:
    d = Data()
    d.customer(1, AS_OF - timedelta(days=9, hours=12), country="SE", locale="sv",
               email_consent=True, sms_consent=True, phone="+46701234567")  # fmt: skip
    d.customer(2, datetime(2025, 6, 1, 8, tzinfo=UTC), country="US", locale="en",
               email_consent=True, sms_consent=True)  # fmt: skip
    d.customer(3, datetime(2025, 12, 1, tzinfo=UTC), country="DE", locale="de", phone="")
    d.customer(4, datetime(2024, 1, 15, tzinfo=UTC), sms_consent=True, phone="+15555550100")
    d.customer(5, datetime(2026, 2, 25, tzinfo=UTC), country="GB", email_consent=True)
    d.customer(6, AS_OF + DAY)  # does not exist yet at AS_OF
    d.customer(7, AS_OF, country="SE", locale="sv")  # created exactly at AS_OF: exists

    # 1: an old canceled subscription and a newer active one (the newer is current)
    d.subscription(101, 1, datetime(2025, 1, 1, tzinfo=UTC), status="canceled")
    d.subscription(102, 1, datetime(2026, 2, 20, tzinfo=UTC), plan="pro", mrr_cents=4950,
                   current_period_end=datetime(2026, 3, 20, tzinfo=UTC),
                   upcoming_invoice_at=datetime(2026, 3, 31, 2, tzinfo=UTC),  # card: 3-30
                   previous_plan="basic", plan_changed_at=AS_OF - 3 * DAY,
                   previous_mrr_cents=1900, previous_billing_interval="month")  # fmt: skip
    # 2: a downgrade 100 days ago (too old for downgraded_90d) from yearly to quarterly billing
    d.subscription(103, 2, datetime(2025, 6, 1, tzinfo=UTC), billing_interval="quarter",
                   mrr_cents=2950, status="past_due",
                   current_period_end=datetime(2026, 3, 5, tzinfo=UTC),
                   upcoming_invoice_at=AS_OF - DAY,  # announced, but already past
                   plan_changed_at=AS_OF - 100 * DAY, previous_mrr_cents=3500,
                   previous_billing_interval="year")  # fmt: skip
    # 4: two subscriptions started at the same moment: the higher id (105) is current
    tie = datetime(2025, 1, 15, tzinfo=UTC)
    d.subscription(104, 4, tie, billing_interval="year", mrr_cents=1000)
    d.subscription(105, 4, tie, plan="pro", billing_interval="year", mrr_cents=3000,
                   status="paused", current_period_end=datetime(2027, 1, 15, tzinfo=UTC))  # fmt: skip
    # 5: a trial with a plan change after AS_OF, and a subscription that starts after AS_OF
    d.subscription(106, 5, datetime(2026, 2, 25, tzinfo=UTC), plan="trial", mrr_cents=0,
                   status="trialing", plan_changed_at=AS_OF + DAY)  # fmt: skip
    d.subscription(107, 5, AS_OF + 2 * DAY, plan="pro")
    # 7: a downgrade 10 days ago from quarterly to monthly billing
    d.subscription(108, 7, AS_OF, plan_changed_at=AS_OF - 10 * DAY, previous_mrr_cents=5000,
                   previous_billing_interval="quarter")  # fmt: skip

    d.card(201, 1, date(2026, 3, 30), datetime(2026, 2, 20, tzinfo=UTC), default=True)
    d.card(202, 1, date(2026, 3, 5), datetime(2026, 2, 21, tzinfo=UTC), default=False)
    d.card(203, 2, date(2026, 3, 10), datetime(2025, 6, 1, tzinfo=UTC), default=True)
    d.card(204, 2, date(2027, 12, 31), AS_OF + DAY, default=True)  # added after AS_OF
    d.card(205, 4, date(2026, 1, 31), datetime(2024, 1, 15, tzinfo=UTC), default=True)
    d.card(206, 4, date(2028, 5, 31), datetime(2023, 1, 1, tzinfo=UTC), default=True)  # older
    d.card(207, 5, date(2027, 1, 31), datetime(2026, 2, 25, tzinfo=UTC), default=False)
    # 7: the card on file at AS_OF was replaced after it (the default flag is today's)
    d.card(208, 7, date(2026, 3, 31), datetime(2026, 1, 1, tzinfo=UTC), default=False)
    d.card(209, 7, date(2029, 3, 31), AS_OF + 2 * DAY, default=True)

    d.invoice(2, "failed", AS_OF - 5 * DAY)
    d.invoice(2, "open", AS_OF - SECOND)
    d.invoice(2, "failed", AS_OF - 10 * DAY, paid_at=AS_OF + DAY)  # paid only after AS_OF
    d.invoice(2, "open", AS_OF + 2 * DAY)  # not yet due
    d.invoice(2, "paid", AS_OF - 40 * DAY, paid_at=AS_OF - 39 * DAY)
    d.invoice(2, "void", AS_OF - 20 * DAY)
    d.invoice(4, "failed", AS_OF)  # due exactly at AS_OF: not before it
    d.invoice(1, "paid", AS_OF - 20 * DAY, paid_at=AS_OF - 16 * DAY, attempts=2)  # retried
    d.invoice(1, "paid", AS_OF - 31 * DAY, paid_at=AS_OF - 28 * DAY, attempts=3)  # too old
    d.invoice(3, "failed", AS_OF - 40 * DAY, attempts=3)  # unpaid for 40 days: past the grace

    d.score(301, 1, 1, AS_OF - 2 * DAY, 0.3, 7)
    d.score(302, 1, 1, AS_OF + DAY, 0.9, 10)  # scored after AS_OF
    d.score(303, 1, 2, AS_OF - DAY, 0.05, 1)
    d.score(304, 2, 2, AS_OF - DAY, 0.07, 2)  # same moment, later model: this one
    d.score(305, 2, 4, AS_OF, 0.5, 9)  # exactly at AS_OF counts

    d.event(1, "login", AS_OF - DAY, 3)
    d.event(1, "feature_use", AS_OF - 14 * DAY, 2)  # first instant of the last-14d window
    d.event(1, "login", AS_OF - 14 * DAY - SECOND, 5)  # last instant of the prior window
    d.event(1, "login", AS_OF, 7)  # at AS_OF: not before it
    d.event(1, "milestone", AS_OF - 2 * DAY, name="onboarding_completed")
    d.event(1, "milestone", AS_OF - 3 * DAY, name="onboarding_completed")  # counted once
    d.event(1, "milestone", AS_OF - 4 * DAY, name="first_invoice")
    d.event(1, "support_ticket", AS_OF - 30 * DAY)  # first instant of the 30d window
    d.event(2, "login", AS_OF - 20 * DAY, 6)
    d.event(2, "feature_use", AS_OF - 28 * DAY, 1)  # first instant of the prior window
    d.event(2, "login", AS_OF - 28 * DAY - SECOND, 4)  # before both windows
    d.event(2, "support_ticket", AS_OF - 3 * DAY, 2)
    d.event(2, "support_ticket", AS_OF - 30 * DAY - SECOND)
    d.event(2, "milestone", AS_OF + timedelta(hours=1), name="onboarding_completed")
    d.event(4, "login", AS_OF - 5 * DAY, 1)
    d.event(4, "login", AS_OF - 15 * DAY, 2)
    d.event(4, "login", AS_OF - 100 * DAY, 1)
    d.event(4, "milestone", AS_OF - 50 * DAY, name="first_invoice")
    d.event(5, "feature_use", AS_OF - timedelta(days=2, hours=6), 2)
    d.event(5, "milestone", AS_OF - DAY, name="onboarding_completed")
    d.event(7, "login", AS_OF + timedelta(hours=1), 9)
    return d


def insert(engine: Engine, data: Data) -> None:
    with Session(engine) as session:
        tables = (data.customers, data.subscriptions, data.cards, data.invoices, data.activity,
                  data.models, data.scores)  # fmt: skip
        for rows in tables:
            session.add_all(rows)
            session.flush()
        session.commit()


# --- Independent recount ---------------------------------------------------------------------------


def days(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 86400


def latest(rows: list[Any], key: Callable[[Any], datetime]) -> Any:
    return max(rows, key=lambda r: (key(r), r.id), default=None)


def next_charge(sub: Subscription, as_of: datetime) -> datetime:
    """The announced upcoming invoice's time while it lies ahead, else the period end."""
    upcoming = sub.upcoming_invoice_at
    return upcoming if upcoming is not None and upcoming > as_of else sub.current_period_end


def status_then(sub: Subscription | None, as_of: datetime, unpaid: list[Invoice]) -> str | None:
    """The subscription's status at ``as_of`` as models/features.py rewinds it."""
    if sub is None:
        return None
    if sub.canceled_at is not None and sub.canceled_at <= as_of:
        return "canceled"
    if sub.status == "canceled" and sub.canceled_at is None:
        return "canceled"
    if sub.status == "paused" and (sub.paused_at is None or sub.paused_at <= as_of):
        return "paused"
    if sub.updated_at is not None and sub.updated_at <= as_of:
        return sub.status  # the source's word at or before as_of
    if sub.status not in ("active", "past_due", "paused", "canceled"):
        return sub.status
    charge_failed = any(i.status == "failed" or i.attempts > 1 for i in unpaid)
    return "past_due" if charge_failed else "active"


def recount(d: Data, as_of: datetime) -> dict[int, dict[str, object]]:
    """The features of every customer existing at ``as_of``, computed in plain Python."""
    out: dict[int, dict[str, object]] = {}
    for c in d.customers:
        if c.created_at > as_of:
            continue
        assert c.id is not None
        sub = latest(
            [s for s in d.subscriptions if s.customer_id == c.id and s.started_at <= as_of],
            lambda s: s.started_at,
        )
        replaced_later = any(
            p.customer_id == c.id and p.is_default and p.created_at > as_of for p in d.cards
        )
        card = latest(
            [
                p
                for p in d.cards
                if p.customer_id == c.id
                and (p.is_default or replaced_later)
                and p.created_at <= as_of
            ],
            lambda p: p.created_at,
        )
        events = [e for e in d.activity if e.customer_id == c.id and e.occurred_at < as_of]
        active = [e for e in events if e.kind in ("login", "feature_use")]

        def total(rows: list[ActivityEvent], start: timedelta, end: timedelta) -> int:
            return sum(e.quantity for e in rows if as_of - start <= e.occurred_at < as_of - end)

        changed = sub.plan_changed_at if sub else None
        invoices = [i for i in d.invoices if i.customer_id == c.id and i.due_at < as_of]
        unpaid = [  # owed at as_of: still unpaid, or paid only at or after it
            i for i in invoices
            if (i.status in ("failed", "open") and (i.paid_at is None or i.paid_at >= as_of))
            or (i.status == "paid" and i.paid_at is not None and i.paid_at >= as_of)
        ]  # fmt: skip
        status = status_then(sub, as_of, unpaid)
        past_due = days(as_of, min(i.due_at for i in unpaid)) if unpaid else None
        rank = {"month": 1, "quarter": 2, "year": 3, None: None}
        score = latest(
            [r for r in d.scores if r.customer_id == c.id and r.as_of <= as_of], lambda r: r.as_of
        )
        last14, prior14 = total(active, 14 * DAY, 0 * DAY), total(active, 28 * DAY, 14 * DAY)
        out[c.id] = {
            "customer.country": c.country,
            "customer.locale": c.locale,
            "tenure_days": days(as_of, c.created_at),
            "email_consent": c.email_consent,
            "sms_consent": c.sms_consent,
            "has_phone": bool(c.phone),
            "subscription.status": status,
            "subscription.plan": sub.plan if sub else None,
            "subscription.billing_interval": sub.billing_interval if sub else None,
            "subscription.mrr": sub.mrr_cents / 100 if sub else None,
            "subscription.days_to_renewal": days(sub.current_period_end, as_of) if sub else None,
            "subscription.days_since_plan_change": (
                days(as_of, changed) if changed and changed < as_of else None
            ),
            "card_expires_in_days": (
                days(datetime.combine(card.expires_on, time(), UTC), as_of) if card else None
            ),
            "card_expires_before_next_charge": bool(
                card
                and sub
                and sub.status != "canceled"
                and card.expires_on < next_charge(sub, as_of).date()
            ),
            "failed_invoices": len(unpaid),
            "usage_last_14d": total(active, 14 * DAY, 0 * DAY),
            "usage_prior_14d": total(active, 28 * DAY, 14 * DAY),
            "days_since_last_active": (
                days(as_of, max(e.occurred_at for e in active)) if active else None
            ),
            "onboarding_completed": any(
                e.kind == "milestone" and e.name == "onboarding_completed" for e in events
            ),
            "support_tickets_30d": total(
                [e for e in events if e.kind == "support_ticket"], 30 * DAY, 0 * DAY
            ),
            "failed_payments_30d": sum(
                1
                for i in invoices
                if i.due_at >= as_of - 30 * DAY and (i.status == "failed" or i.attempts > 1)
            ),
            "invoice_past_due": bool(unpaid),
            "days_past_due": past_due,
            "in_grace_period": past_due is not None and past_due <= 27,
            "paused": status == "paused",
            "downgraded_90d": bool(
                sub
                and changed
                and as_of - 90 * DAY <= changed < as_of
                and sub.previous_mrr_cents is not None
                and sub.previous_mrr_cents > sub.mrr_cents
            ),
            "billing_interval_shortened": bool(
                sub
                and changed
                and changed < as_of
                and sub.previous_billing_interval
                and rank[sub.previous_billing_interval] > rank[sub.billing_interval]  # type: ignore[operator]
            ),
            "contract_ends_in_days": (
                days(sub.current_period_end, as_of)
                if sub and sub.billing_interval in ("quarter", "year") and status != "canceled"
                else None
            ),
            "milestones_completed": len({e.name for e in events if e.kind == "milestone"}),
            "usage_trend": last14 / prior14 if prior14 else None,
            "churn_risk": score.churn_risk if score else None,
            "churn_risk_decile": score.decile if score else None,
        }
    return out


# --- Reference evaluator (two-valued: anything compared with null is false) ----------------------

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
}


def ref_value(node: Rule, row: dict[str, object]) -> Any:
    match node:
        case FieldRef(name):
            return row[name]
        case Literal_(value):
            return value
        case Neg(item):
            value = ref_value(item, row)
            return None if value is None else -value
        case BinOp(op, left, right):
            a, b = ref_value(left, row), ref_value(right, row)
            if a is None or b is None or (op == "/" and b == 0):
                return None
            return a / b if op == "/" else _OPS[op](a, b)
    raise AssertionError(node)


def ref_holds(node: Rule, row: dict[str, object]) -> bool:
    match node:
        case And(items):
            return all(ref_holds(item, row) for item in items)
        case Or(items):
            return any(ref_holds(item, row) for item in items)
        case Not(item):
            return not ref_holds(item, row)
        case Compare(op, left, right):
            a, b = ref_value(left, row), ref_value(right, row)
            return a is not None and b is not None and bool(_OPS[op](a, b))
        case InList(expr, values, negated):
            value = ref_value(expr, row)
            return value is not None and (value in values) != negated
        case IsNull(expr, negated):
            return (ref_value(expr, row) is None) != negated
        case FieldRef() | Literal_():
            return ref_value(node, row) is True
    raise AssertionError(node)
