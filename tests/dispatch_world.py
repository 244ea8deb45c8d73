"""A small world of customers, an experiment and recording channels for dispatcher tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from messaging.channels import OutgoingMessage, Receipt, SendRecord
from models.customer_data import Customer, PaymentMethod, Subscription
from models.db import session_scope
from models.records import (
    Assignment,
    Experiment,
    ExperimentSnapshot,
    Message,
)

NOW = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)  # 11:00 in Stockholm: not quiet
ASSIGNED = NOW - timedelta(days=3)

SPEC = """\
key: card-expiry-reminder
hypothesis: An email + SMS reminder before the card expires recovers more renewals than email alone.
segment:
  where: card_expires_in_days <= 30 and subscription.status == "active"
  exclude_if_in_other_experiments: true
assignment: {salt: card-expiry-2026q4}
arms:
  - {name: control, weight: 1}
  - name: email
    steps: [{at: 0d, channel: email, template: card_expiry}]
  - name: email_sms
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 3d, channel: sms, template: card_expiry_sms, unless: payment_method_updated}
  - name: discount
    offer: {kind: discount, percent: 30, months: 3}
    steps: [{at: 0d, channel: email, template: offer_discount}]
metrics:
  primary: card_updated_14d
  secondary: [retained_30d, revenue_90d]
  guardrails: [unsubscribed_30d]
analysis: {alpha: 0.05}
messaging: {quiet_hours: "21:00-08:00", frequency_cap: {max: 2, per: 7d}}
schedule: {cron: "0 9 * * *", timezone: Europe/Stockholm}
"""


@dataclass
class Recording:
    """A channel that records every send (thread-safe) and can fail on demand."""

    provider: str = "recording"
    keys: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    fail_with: list[Exception] = field(default_factory=list)
    messages: list[OutgoingMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutgoingMessage) -> Receipt:
        with self.lock:
            if self.fail_with:
                raise self.fail_with.pop(0)
            self.keys.append(message.idempotency_key)
            self.bodies.append(message.rendered.text)
            self.messages.append(message)
            return Receipt(self.provider, f"rec-{len(self.keys)}")

    def find_sent(self, record: SendRecord) -> Receipt | None:
        with self.lock:
            for number, key in enumerate(self.keys, start=1):
                if key == record.idempotency_key:
                    return Receipt(self.provider, f"rec-{number}")
            return None


class World:
    """Builds experiments, customers, assignments and outbox rows directly in the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.count = 0
        with session_scope(engine) as session:
            experiment = Experiment(
                key="card-expiry-reminder",
                hypothesis="h",
                spec_hash="x" * 64,
                created_at=NOW - timedelta(days=10),
                updated_at=NOW - timedelta(days=10),
            )
            session.add(experiment)
            session.flush()
            assert experiment.id is not None
            self.experiment_id: int = experiment.id
            session.add(
                ExperimentSnapshot(
                    experiment_id=experiment.id,
                    spec_hash="x" * 64,
                    spec_yaml=SPEC,
                    created_at=NOW - timedelta(days=10),
                )
            )

    def customer(self, **overrides: object) -> int:
        self.count += 1
        values: dict[str, object] = {
            "external_id": f"cus_{self.count:04d}",
            "name": f"Anna{self.count} Berg",
            "email": f"anna{self.count}@example.com",
            "phone": "+46701234567",
            "locale": "en",
            "timezone": "Europe/Stockholm",
            "email_consent": True,
            "sms_consent": True,
            "created_at": NOW - timedelta(days=100),
        }
        values.update(overrides)
        with session_scope(self.engine) as session:
            customer = Customer(**values)  # type: ignore[arg-type]
            session.add(customer)
            session.flush()
            assert customer.id is not None
            cid = customer.id
            session.add(
                Subscription(
                    customer_id=cid,
                    plan="Pro",
                    billing_interval="month",
                    mrr_cents=4900,
                    status="active",
                    started_at=NOW - timedelta(days=90),
                    current_period_end=NOW + timedelta(days=20),
                )
            )
            session.add(self.card(cid, NOW - timedelta(days=90)))
            session.add(
                Assignment(
                    experiment_id=self.experiment_id,
                    customer_id=cid,
                    arm="email_sms",
                    bucket=0.5,
                    assigned_at=ASSIGNED,
                )
            )
        return cid

    @staticmethod
    def card(customer_id: int, created_at: datetime) -> PaymentMethod:
        return PaymentMethod(
            customer_id=customer_id,
            brand="visa",
            last4="4242",
            exp_month=11,
            exp_year=2026,
            expires_on=date(2026, 11, 30),
            created_at=created_at,
        )

    def add(self, *rows: object) -> None:
        with session_scope(self.engine) as session:
            session.add_all(rows)

    def message(
        self,
        customer_id: int,
        channel: str = "email",
        template: str = "card_expiry",
        *,
        arm: str = "email_sms",
        step: int = 0,
        at: datetime = NOW - timedelta(minutes=5),
        unless: str | None = None,
        status: str = "pending",
        sent_at: datetime | None = None,
        shadow: bool = False,
        experiment_id: int | None = None,
    ) -> str:
        key = f"card-expiry-reminder:{customer_id}:{arm}:{step}:{channel}"
        if experiment_id is not None:
            key += f":{experiment_id}"
        self.add(
            Message(
                idempotency_key=key,
                experiment_id=experiment_id or self.experiment_id,
                shadow=shadow,
                customer_id=customer_id,
                arm=arm,
                step_index=step,
                channel=channel,
                template=template,
                unless_condition=unless,
                scheduled_at=at,
                status=status,
                sent_at=sent_at,
                created_at=ASSIGNED,
                updated_at=ASSIGNED,
            )
        )
        return key

    def row(self, key: str) -> Message:
        with Session(self.engine) as session:
            return session.exec(select(Message).where(Message.idempotency_key == key)).one()
