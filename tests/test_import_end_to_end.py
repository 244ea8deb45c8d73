"""End to end on imported data: a small business from export files, the shipped card-expiry
experiment run on it, messages dispatched to the outbox, an updated export imported, evaluated:
the report counts exactly the card updates the new export brought."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from experiments.loader import load_spec
from experiments.rules import parse_rule
from messaging.channels import OutboxChannel
from messaging.dispatcher import dispatch_due
from messaging.render import template_exists
from models.bulk import table
from models.customer_data import Customer
from models.evaluation import evaluate
from models.experiments import assign_customers, register_experiment, schedule_messages
from models.imports.mapping import load_mapping
from models.imports.run import import_file
from models.records import Assignment
from models.segments import select_segment
from tests import stripe_exports as sx

pytestmark = pytest.mark.slow

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"
AS_OF = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)  # 11:00 in Stockholm: outside quiet hours
N = 60
CRM_MAPPING = """\
entity: customers
timestamps: unix
columns:
  external_id: id
  name: Name
  email: Email
  phone: Phone
  country: Address Country
  timezone: {value: Europe/Stockholm}
  locale: {value: sv}
  email_consent: {value: true}
  sms_consent: {value: true}
  created_at: Created (UTC)
"""


def export(folder: Path, cards: list[list[object]], subs: list[list[object]]) -> dict[str, Path]:
    folder.mkdir()
    customers = [[*row[:4], "070-123 45 67", "SE", *row[6:]] for row in sx.customers(N)]
    return {
        "crm": sx.write_csv(folder / "customers.csv", sx.CUSTOMER_COLUMNS, customers),
        "stripe-subscriptions": sx.write_csv(
            folder / "subscriptions.csv", sx.SUBSCRIPTION_COLUMNS, subs
        ),
        "stripe-invoices": sx.write_csv(
            folder / "invoices.csv", sx.INVOICE_COLUMNS, sx.invoices(N)
        ),
        "stripe-payment-methods": sx.write_csv(
            folder / "cards.csv", sx.PAYMENT_METHOD_COLUMNS, cards
        ),
    }


def run_imports(
    engine: Engine, files: dict[str, Path], mapping_file: Path, now: datetime
) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, path in files.items():
        mapping = load_mapping(mapping_file if name == "crm" else name)
        summary = import_file(engine, path, mapping, now=now)
        assert summary.rejects == [], summary.rejects
        out[name] = (summary.inserted, summary.updated, summary.unchanged)
    return out


def test_import_run_send_reimport_evaluate(engine: Engine, tmp_path: Path) -> None:
    mapping_file = tmp_path / "crm.yaml"
    mapping_file.write_text(CRM_MAPPING)
    # Every card expires at the end of June 2026: within 30 days of AS_OF.
    cards = [[*row[:5], 6, 2026, row[7]] for row in sx.payment_methods(N)]
    first = run_imports(
        engine, export(tmp_path / "v1", cards, sx.subscriptions(N)), mapping_file, AS_OF
    )
    assert first == dict.fromkeys(first, (N, 0, 0))

    loaded = load_spec(DEFINITIONS / "card-expiry-reminder.yaml", template_exists)
    eid = register_experiment(engine, loaded, AS_OF).experiment_id
    segment = select_segment(
        engine,
        parse_rule(loaded.spec.segment.where),
        AS_OF,
        experiment_id=eid,
        exclude_assigned=True,
    )
    assert len(segment) == N
    assigned = assign_customers(engine, eid, loaded.spec, segment, AS_OF)
    assert assigned.new == N
    scheduled = schedule_messages(engine, eid, loaded.spec, AS_OF)
    treated = assigned.by_arm["email"] + assigned.by_arm["email_sms"]
    # Control customers get shadow ("would have sent") rows at the treatment arms' touch points.
    shadow = assigned.by_arm["control"] * len(loaded.spec.shadow_steps())
    assert scheduled == treated + assigned.by_arm["email_sms"] + shadow
    with engine.connect() as connection:
        customers = table(Customer)
        arms = dict(
            connection.execute(
                select(customers.c.external_id, table(Assignment).c.arm).join(
                    table(Assignment), table(Assignment).c.customer_id == customers.c.id
                )
            ).all()
        )
    no_email = 1 if arms["cus_0003"] != "control" else 0  # cus_0003 has no email address
    outbox = OutboxChannel(tmp_path / "outbox")
    sent = dispatch_due(engine, AS_OF, {"email": outbox, "sms": outbox})
    assert sent.sent == treated - no_email  # the SMS steps are due in 3 days
    assert sent.skipped == ({"no_address": 1} if no_email else {})
    emails = list((tmp_path / "outbox" / "card-expiry-reminder" / "email").glob("*.txt"))
    assert len(emails) == treated - no_email

    # The next export: customers with an even index put in a new card two days later; one cancels.
    new_cards = [
        [
            f"pm_new_{i:04d}",
            f"cus_{i:04d}",
            "card",
            "visa",
            "1111",
            9,
            2030,
            int((AS_OF + timedelta(days=2)).timestamp()),
        ]
        for i in range(0, N, 2)
    ]
    subs = sx.subscriptions(N)
    subs[1][8], subs[1][12] = "canceled", int((AS_OF + timedelta(days=4)).timestamp())
    later = AS_OF + timedelta(days=5)
    second = run_imports(
        engine, export(tmp_path / "v2", cards + new_cards, subs), mapping_file, later
    )
    assert second == {
        "crm": (0, 0, N),
        "stripe-subscriptions": (0, 1, N - 1),
        "stripe-invoices": (0, 0, N),
        "stripe-payment-methods": (N // 2, 0, N),
    }

    report = evaluate(engine, eid, loaded.spec, AS_OF + timedelta(days=40), later)
    updated = Counter(arms[f"cus_{i:04d}"] for i in range(0, N, 2))
    per_arm = Counter(arms.values())
    card_metric = next(m for m in report.metrics if m.name == "card_updated_14d")
    assert {a.name: (a.n, a.sum) for a in card_metric.arms} == {
        arm: (per_arm[arm], float(updated[arm])) for arm in per_arm
    }
    retained = next(m for m in report.metrics if m.name == "retained_30d")
    churned_arm = arms["cus_0001"]
    assert {a.name: a.n - a.sum for a in retained.arms} == {
        arm: (1.0 if arm == churned_arm else 0.0) for arm in per_arm
    }
