"""A fixed, seeded experiment in the database for the report's tests: 300 customers assigned over
three days, the email arm's messages sent (a few skipped for consent), delivery events, card updates
drawn with a seeded generator, paid invoices. Returns what was written, so tests can count it
independently of the report's SQL."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from experiments.loader import parse_spec
from models.customer_data import Customer, Invoice, PaymentMethod
from models.experiments import assign_customers, register_experiment, schedule_messages
from models.records import Assignment, DeliveryEvent, Message
from tests.dbdata import T0, add_customers

SPEC = """\
key: card-reminder-golden
hypothesis: An email before the card expires gets more customers to update it.
owner: growth@retain.example
segment:
  where: card_expires_in_days <= 30
assignment: {salt: golden-2026}
arms:
  - {name: control, weight: 1}
  - name: email
    steps: [{at: 0d, channel: email, template: card_expiry}]
metrics:
  primary: card_updated_14d
  secondary: [net_revenue_90d]
  guardrails: [unsubscribed_30d]
analysis: {alpha: 0.05, mde: 0.1, sequential_tuning_n: 200}
"""
AS_OF = T0 + timedelta(days=40)
COMPUTED_AT = datetime(2026, 12, 12, 8, 0, tzinfo=UTC)
RATES = {"control": 0.25, "email": 0.45}


@dataclass
class Seeded:
    experiment_id: int
    assigned: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)
    assigned_at: dict[int, tuple[str, datetime]] = field(default_factory=dict)


def seed_experiment(engine: Engine, seed: int = 9) -> Seeded:
    """Write the experiment (see the module docstring) and return what was written."""
    rng = random.Random(seed)
    ids = add_customers(engine, 300, card_days=20)
    with Session(engine) as session:  # most customers pay in euros, a few in pounds
        session.execute(update(Customer).values(currency="EUR"))
        session.execute(update(Customer).where(Customer.id.in_(ids[:30])).values(currency="GBP"))  # type: ignore[union-attr]
        session.commit()
    loaded = parse_spec(SPEC, "golden.yaml")
    eid = register_experiment(engine, loaded, T0).experiment_id
    for day in range(3):
        now = T0 + timedelta(days=day, hours=day)
        assign_customers(engine, eid, loaded.spec, ids[day * 100 : (day + 1) * 100], now)
        schedule_messages(engine, eid, loaded.spec, now)
    seeded = Seeded(eid)
    with Session(engine) as session:
        assignments = session.exec(select(Assignment).where(Assignment.experiment_id == eid)).all()
        for a in assignments:
            seeded.assigned[a.arm] = seeded.assigned.get(a.arm, 0) + 1
            seeded.assigned_at[a.customer_id] = (a.arm, a.assigned_at.replace(tzinfo=UTC))
        messages = session.exec(select(Message).where(Message.experiment_id == eid)).all()
        for event_id, m in enumerate(sorted(messages, key=lambda m: m.id or 0)):
            if rng.random() < 0.1:
                m.status, m.status_reason = "skipped", "no_consent"
                seeded.skipped[m.arm] = seeded.skipped.get(m.arm, 0) + 1
            elif m.shadow:  # control: would have been sent (intent-to-treat), never is
                m.status, m.status_reason = "withheld", "control"
                seeded.sent[m.arm] = seeded.sent.get(m.arm, 0) + 1
            else:
                m.status, m.sent_at = "sent", m.scheduled_at
                seeded.sent[m.arm] = seeded.sent.get(m.arm, 0) + 1
                for name, chance, tally in (
                    ("delivered", 0.9, seeded.delivered),
                    ("open", 0.4, seeded.opened),
                ):
                    if rng.random() < chance:
                        tally[m.arm] = tally.get(m.arm, 0) + 1
                        session.add(
                            DeliveryEvent(
                                message_id=m.id,
                                provider="sendgrid",
                                provider_event_id=f"ev-{event_id}-{name}",
                                event=name,
                                occurred_at=m.scheduled_at + timedelta(minutes=5),
                                payload="{}",
                            )
                        )
            session.add(m)
        for customer_id, (arm, at) in sorted(seeded.assigned_at.items()):
            if rng.random() < RATES[arm]:
                when = at + timedelta(days=rng.randint(0, 12), hours=2)
                session.add(
                    PaymentMethod(
                        customer_id=customer_id,
                        last4="4242",
                        exp_month=12,
                        exp_year=2030,
                        expires_on=date(2030, 12, 31),
                        created_at=when,
                    )
                )
                session.add(
                    Invoice(
                        customer_id=customer_id,
                        amount_cents=4900,
                        status="paid",
                        due_at=when,
                        paid_at=when,
                    )
                )
        session.commit()
    return seeded
