"""Two dispatchers, each in its own process with its own engine, over the same due messages: the
data (customers with more due messages than the frequency cap allows, ordered so that both
dispatchers decide the same customers at the same time) and the child process.

    python -m tests.concurrent_dispatch DATABASE_URL PROVIDER_URL WORKER_ID

The child prints ``ready`` once imported and connected, waits for a line on stdin (so both start
sending together), runs the real dispatcher with the real SendGrid and Twilio clients against the
fake providers, and prints its summary as JSON.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

SPEC = """\
key: two-dispatchers
hypothesis: Two dispatchers never send a message twice, nor past the frequency cap.
segment: {where: tenure_days >= 0}
arms:
  - {name: control}
  - name: many
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 0d, channel: sms, template: card_expiry_sms}
      - {at: 0d, channel: sms, template: card_expiry_sms}
      - {at: 0d, channel: sms, template: card_expiry_sms}
metrics: {primary: card_updated_14d}
messaging: {frequency_cap: {max: 2, per: 7d}}
"""
STEPS = [("email", "card_expiry")] * 3 + [("sms", "card_expiry_sms")] * 3
CAP = 2
BLOCK = 50
"""Customers per block: a block's messages are due one after another, step by step, so
consecutive batches (one per dispatcher) hold the same customers' other messages."""
BATCH = 100
CALLBACK = "https://hooks.retain.example/twilio/status"


def prepare(database_url: str, customers: int, now: datetime) -> None:
    """One running experiment; ``customers`` customers with three due emails and three due SMS
    each (the cap lets two of each through)."""
    from models.customer_data import Customer
    from models.db import make_engine
    from models.records import Experiment, ExperimentSnapshot, Message

    engine = make_engine(database_url)
    with engine.begin() as conn:
        eid = conn.execute(
            Experiment.__table__.insert().returning(Experiment.__table__.c.id),  # type: ignore[attr-defined]
            {
                "key": "two-dispatchers",
                "hypothesis": "h",
                "status": "running",
                "spec_hash": "d" * 64,
                "created_at": now - timedelta(days=1),
                "updated_at": now - timedelta(days=1),
            },
        ).scalar_one()
        conn.execute(
            ExperimentSnapshot.__table__.insert(),  # type: ignore[attr-defined]
            {"experiment_id": eid, "spec_hash": "d" * 64, "spec_yaml": SPEC, "created_at": now},
        )
        conn.execute(
            Customer.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "external_id": f"cus_{i:06d}",
                    "name": f"Customer {i}",
                    "email": f"c{i}@example.com",
                    "phone": f"+4670{i:07d}",
                    "locale": "en",
                    "timezone": "Europe/Stockholm",
                    "country": "SE",
                    "email_consent": True,
                    "sms_consent": True,
                    "created_at": now - timedelta(days=100),
                }
                for i in range(customers)
            ],
        )
        ids = [r[0] for r in conn.execute(Customer.__table__.select().order_by("id")).all()]  # type: ignore[attr-defined]
        order = [
            (cid, step)
            for start in range(0, len(ids), BLOCK)
            for step in range(len(STEPS))
            for cid in ids[start : start + BLOCK]
        ]
        first = now - timedelta(hours=3)
        conn.execute(
            Message.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "idempotency_key": f"two-dispatchers:{cid}:many:{step}",
                    "experiment_id": eid,
                    "customer_id": cid,
                    "arm": "many",
                    "step_index": step,
                    "channel": STEPS[step][0],
                    "template": STEPS[step][1],
                    "scheduled_at": first + timedelta(seconds=position),
                    "status": "pending",
                    "attempts": 0,
                    "shadow": False,
                    "created_at": first,
                    "updated_at": first,
                }
                for position, (cid, step) in enumerate(order)
            ],
        )
    engine.dispose()


def child(database_url: str, provider_url: str, worker: str) -> int:
    from messaging.dispatcher import DispatchOptions, dispatch_due
    from messaging.sendgrid_channel import SendGridChannel
    from messaging.twilio_channel import TwilioChannel
    from models.db import make_engine
    from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN

    channels = {
        "email": SendGridChannel(
            SENDGRID_KEY, from_email="hi@retain.example", base_url=provider_url, timeout=10
        ),
        "sms": TwilioChannel(
            TWILIO_SID,
            TWILIO_TOKEN,
            from_number="+15005550006",
            base_url=provider_url,
            status_callback_base_url=CALLBACK,
            timeout=10,
        ),
    }
    engine = make_engine(database_url)
    with engine.connect():
        pass
    print("ready", flush=True)
    sys.stdin.readline()
    options = DispatchOptions(batch_size=BATCH, senders=4, call_budget=15.0)
    summary = dispatch_due(engine, datetime.now(UTC), channels, worker_id=worker, options=options)
    engine.dispose()
    print(json.dumps(asdict(summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child(*sys.argv[1:4]))
