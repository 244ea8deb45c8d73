"""Dunning's database side: the ``invoice_paid`` step condition in SQL, the billing facts a
message shows, and offer grants with their codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from messaging.links import offer_code
from models.billing_facts import GRACE_DAYS, load_billing_facts
from models.customer_data import Invoice, PaymentMethod
from models.offers import grant_sent_offers
from models.outbox_facts import conditions_met
from models.records import Assignment, Experiment, ExperimentSnapshot, Message, OfferGrant
from tests.webhook_support import add_customer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "dunning-test-secret")


def experiment(engine: Engine, key: str, spec_file: str) -> int:
    with Session(engine) as session:
        row = Experiment(key=key, hypothesis="h", spec_hash="0" * 64, created_at=T0, updated_at=T0)
        session.add(row)
        session.flush()
        assert row.id is not None
        session.add(
            ExperimentSnapshot(
                experiment_id=row.id,
                spec_hash="0" * 64,
                spec_yaml=(DEFINITIONS / spec_file).read_text(),
                created_at=T0,
            )
        )
        session.commit()
        return row.id


def customer_in(
    engine: Engine, experiment_id: int, name: str, arm: str, status: str
) -> tuple[int, int]:
    """A customer assigned at T0 with one message of ``arm``; (customer id, message id)."""
    cid = add_customer(engine, name, f"{name}@example.com", None)
    with Session(engine) as session:
        session.add(
            Assignment(
                experiment_id=experiment_id, customer_id=cid, arm=arm, bucket=0.5, assigned_at=T0
            )
        )
        message = Message(
            idempotency_key=f"x:{name}:{arm}:1",
            experiment_id=experiment_id,
            customer_id=cid,
            arm=arm,
            step_index=1,
            channel="email",
            template="dunning_reminder",
            unless_condition="invoice_paid",
            scheduled_at=T0 + timedelta(days=7),
            status=status,
            sent_at=T0 + timedelta(hours=1) if status == "sent" else None,
            created_at=T0,
            updated_at=T0,
        )
        session.add(message)
        session.commit()
        assert message.id is not None
        return cid, message.id


def invoice(
    cid: int, due_days: float, status: str, paid_days: float | None = None, cents: int = 4_900
) -> Invoice:
    return Invoice(
        customer_id=cid,
        amount_cents=cents,
        status=status,
        due_at=T0 + timedelta(days=due_days),
        paid_at=T0 + timedelta(days=paid_days) if paid_days is not None else None,
    )


def card(cid: int, days: float) -> PaymentMethod:
    return PaymentMethod(
        customer_id=cid,
        last4="1111",
        exp_month=1,
        exp_year=2030,
        expires_on=datetime(2030, 1, 31).date(),
        created_at=T0 + timedelta(days=days),
    )


def test_invoice_paid_is_judged_in_sql_when_the_step_is_due(engine: Engine) -> None:
    eid = experiment(engine, "dunning", "dunning.yaml")
    paid_later, msg_paid = customer_in(engine, eid, "paid_later", "email", "pending")
    new_card, msg_card = customer_in(engine, eid, "new_card", "email", "pending")
    still_owes, msg_owes = customer_in(engine, eid, "still_owes", "email", "pending")
    old_card, msg_old = customer_in(engine, eid, "old_card", "email", "pending")
    settled_before, msg_settled = customer_in(engine, eid, "settled_before", "email", "pending")
    with Session(engine) as session:
        session.add_all(
            [
                invoice(paid_later, -2, "paid", paid_days=2.0),
                invoice(new_card, -2, "failed"),
                card(new_card, 1.0),
                invoice(still_owes, -2, "failed"),
                invoice(still_owes, -40, "paid", paid_days=-40),
                invoice(old_card, -2, "failed"),
                card(old_card, -5.0),  # before the assignment: it is the card that failed
                invoice(settled_before, -35, "paid", paid_days=-30),
            ]
        )
        session.commit()
    ids = [msg_paid, msg_card, msg_owes, msg_old, msg_settled]
    with engine.connect() as conn:
        assert conditions_met(conn, ids, T0 + timedelta(days=3)) == {
            msg_paid,
            msg_card,
            msg_settled,
        }
        # Judged at the time given, not later: on day 0.5 nobody had paid or added a card yet.
        assert conditions_met(conn, ids, T0 + timedelta(hours=12)) == {msg_settled}


def test_billing_facts_for_messages(engine: Engine) -> None:
    eid = experiment(engine, "dunning", "dunning.yaml")
    owes, _ = customer_in(engine, eid, "owes", "email", "pending")
    fine, _ = customer_in(engine, eid, "fine", "email", "pending")
    with Session(engine) as session:
        session.add_all(
            [
                invoice(owes, -10, "failed", cents=9_900),  # the oldest unpaid one is shown
                invoice(owes, -2, "open", cents=4_900),
                invoice(owes, 5, "open", cents=1_000),  # not due yet
                invoice(fine, -2, "paid", paid_days=-2),
            ]
        )
        session.commit()
    with engine.connect() as conn:
        facts = load_billing_facts(conn, [owes, fine], T0)
    assert facts[owes].amount_due_minor == 9_900 and facts[owes].currency == "USD"
    assert facts[owes].due_date == (T0 - timedelta(days=10)).date()
    assert facts[owes].cancel_date == (T0 + timedelta(days=GRACE_DAYS - 10)).date()
    assert facts[fine].amount_due_minor is None and facts[fine].cancel_date is None


def test_offer_grants_get_unique_codes_once_the_offer_was_sent(engine: Engine) -> None:
    eid = experiment(engine, "falling-usage-offer", "falling-usage-offer.yaml")
    sent = [customer_in(engine, eid, f"cus_{i:03d}", "discount", "sent")[0] for i in range(20)]
    paused, _ = customer_in(engine, eid, "cus_pause", "pause", "sent")
    customer_in(engine, eid, "cus_pending", "discount", "pending")  # not sent: no offer made yet
    customer_in(engine, eid, "cus_control", "control", "sent")  # the control arm offers nothing
    assert grant_sent_offers(engine, T0 + timedelta(days=1)) == 21
    assert grant_sent_offers(engine, T0 + timedelta(days=2)) == 0  # idempotent
    with engine.connect() as conn:
        grants = conn.execute(
            select(
                OfferGrant.customer_id,
                OfferGrant.offer_kind,
                OfferGrant.percent_off,
                OfferGrant.code,
                OfferGrant.offered_at,
            )
        ).all()
    by_customer = {g.customer_id: g for g in grants}
    assert set(by_customer) == {*sent, paused}
    assert len({g.code for g in grants}) == 21
    first = by_customer[sent[0]]
    assert (first.offer_kind, first.percent_off) == ("discount", 30)
    assert first.code == offer_code("falling-usage-offer", "cus_000", "discount")
    assert by_customer[paused].offer_kind == "pause" and by_customer[paused].percent_off is None
    assert first.offered_at.replace(tzinfo=UTC) == T0 + timedelta(hours=1)


def test_dispatched_reminder_says_what_is_owed_with_signed_links(
    engine: Engine, tmp_path: Path
) -> None:
    """The dispatcher builds a message's context as `retain preview` does: the amount owed in the
    customer's currency and locale, the cancel date, and links signed for this customer."""
    from messaging.channels import OutboxChannel
    from messaging.dispatcher import dispatch_due
    from messaging.links import verify_link_token

    eid = experiment(engine, "dunning", "dunning.yaml")
    owes, _ = customer_in(engine, eid, "owes", "email", "pending")
    with Session(engine) as session:
        session.add(invoice(owes, -1, "failed", cents=9_900))
        session.commit()
    channel = OutboxChannel(tmp_path)
    summary = dispatch_due(engine, T0 + timedelta(days=7), {"email": channel, "sms": channel})
    assert summary.sent == 1
    [text] = (tmp_path / "dunning" / "email").glob("*.txt")
    body = text.read_text(encoding="utf-8")
    assert "99,00\xa0US$" in body  # Babel, sv-SE, the customer's currency
    cancel = (T0 + timedelta(days=GRACE_DAYS - 1)).date()
    assert f"{cancel.day} " in body
    url = next(line for line in body.splitlines() if "/unsubscribe/" in line).split()[-1]
    action, customer, token = url.rsplit("/", 3)[-3:]
    assert action == "unsubscribe" and customer == "owes"
    assert verify_link_token("unsubscribe", customer, token) is not None
    assert verify_link_token("unsubscribe", "someone-else", token) is None
