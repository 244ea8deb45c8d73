"""The dispatcher driving the real SendGrid and Twilio clients against the local fake providers:
exact requests, recorded attempts, faults (transient and permanent), fatal credentials errors,
reconciliation of unknown outcomes, and a dispatch that cannot finish saying so."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from messaging.dispatcher import DispatchOptions, dispatch_due
from messaging.policy import PolicySettings
from messaging.sendgrid_channel import SendGridChannel
from messaging.twilio_channel import TwilioChannel
from models.dispatch_records import SendAttempt
from models.records import Message, Suppression
from tests.dispatch_world import NOW, World
from tests.providers import (
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    Answer,
    FakeProviders,
    sendgrid_error,
    twilio_error,
)

CALLBACK = "https://hooks.retain.example/twilio/status"


@pytest.fixture
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def channels(fake: FakeProviders, timeout: float = 2.0, key: str = SENDGRID_KEY) -> dict:  # type: ignore[type-arg]
    return {
        "email": SendGridChannel(
            key, from_email="hello@retain.example", base_url=fake.url, timeout=timeout
        ),
        "sms": TwilioChannel(
            TWILIO_SID,
            TWILIO_TOKEN,
            from_number="+15005550006",
            base_url=fake.url,
            status_callback_base_url=CALLBACK,
            timeout=timeout,
        ),
    }


FAST = DispatchOptions(batch_size=25, senders=4, call_budget=5.0, retry_base=timedelta(seconds=10))


def rows(engine: Engine) -> list[Message]:
    with Session(engine) as session:
        return list(session.exec(select(Message).order_by(Message.id)).scalars())  # type: ignore[call-overload]


def test_messages_reach_the_providers_with_their_ids(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    customer = world.customer()
    email_key = world.message(customer)
    sms_key = world.message(customer, "sms", "card_expiry_sms", step=1)
    summary = dispatch_due(engine, NOW, channels(fake), options=FAST)
    assert (summary.sent, summary.failed, summary.complete) == (2, 0, True)
    email, sms = world.row(email_key), world.row(sms_key)
    [mail] = fake.sends("sendgrid")
    body = mail.json()
    assert body["custom_args"] == {"retain_message_id": str(email.id), "retain_key": email_key}
    assert body["categories"] == [
        "retain:card-expiry-reminder",
        "retain:card-expiry-reminder:email_sms",
    ]
    unsubscribe = body["headers"]["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://app.example.com/unsubscribe/cus_0001/")
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["personalizations"] == [{"to": [{"email": "anna1@example.com"}]}]
    [text] = fake.sends("twilio")
    assert text.form()["StatusCallback"] == [f"{CALLBACK}?retain_message_id={sms.id}"]
    assert text.form()["To"] == ["+46701234567"]
    assert (email.provider, email.provider_message_id) == (
        "sendgrid",
        fake.accepted["sendgrid"][0]["id"],
    )
    assert (sms.provider, sms.provider_message_id) == ("twilio", fake.accepted["twilio"][0]["id"])
    with Session(engine) as session:
        attempts = session.exec(select(SendAttempt)).scalars().all()  # type: ignore[call-overload]
    assert sorted((a.message_id, a.attempt, a.outcome) for a in attempts) == [
        (email.id, 1, "sent"),
        (sms.id, 1, "sent"),
    ]


def test_twenty_percent_transient_failures_still_send_everything_once(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    fake.transient_rate = 0.2
    keys = []
    for _ in range(30):
        customer = world.customer()
        keys.append(world.message(customer))
        keys.append(world.message(customer, "sms", "card_expiry_sms", step=1))
    when, rounds, retried = NOW, 0, 0
    while rounds < 20:
        summary = dispatch_due(engine, when, channels(fake), options=FAST)
        retried += summary.retried
        if all(r.status == "sent" for r in rows(engine)):
            break
        when += timedelta(minutes=30)
        rounds += 1
    assert all(r.status == "sent" for r in rows(engine))
    assert retried > 0  # the faults did happen
    accepted = fake.accepted_ids("sendgrid") + fake.accepted_ids("twilio")
    assert Counter(accepted) == Counter(str(r.id) for r in rows(engine))  # each exactly once
    assert len(fake.sends("sendgrid")) + len(fake.sends("twilio")) == len(keys) + retried


def test_permanent_errors_are_not_retried_and_suppress_where_they_mean_so(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    stopped, invalid, bad_email, fine = (world.customer() for _ in range(4))
    keys = {
        "stopped": world.message(stopped, "sms", "card_expiry_sms", step=1),
        "invalid": world.message(invalid, "sms", "card_expiry_sms", step=1),
        "bad_email": world.message(bad_email),
        "fine": world.message(fine),
    }
    ids = {name: world.row(key).id for name, key in keys.items()}

    def permanent(provider: str, message: dict) -> Answer | None:  # type: ignore[type-arg]
        if message["retain_message_id"] == str(ids["stopped"]):
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        if message["retain_message_id"] == str(ids["invalid"]):
            return twilio_error(400, 21211, "The 'To' number is not a valid phone number.")
        if message["retain_message_id"] == str(ids["bad_email"]):
            return sendgrid_error(400, "Does not contain a valid address.", "personalizations.0.to")
        return None

    fake.permanent = permanent
    first = dispatch_due(engine, NOW, channels(fake), options=FAST)
    assert (first.sent, first.failed, first.retried) == (1, 3, 0)
    again = dispatch_due(engine, NOW + timedelta(days=1), channels(fake), options=FAST)
    assert (again.sent, again.failed, again.retried) == (0, 0, 0)
    assert len(fake.sends("twilio")) == 2 and len(fake.sends("sendgrid")) == 2  # never retried
    reasons = {name: world.row(key).status_reason for name, key in keys.items()}
    assert reasons == {
        "stopped": "permanent_error:21610",
        "invalid": "permanent_error:21211",
        "bad_email": "permanent_error:400",
        "fine": None,
    }
    assert "unsubscribed recipient" in (world.row(keys["stopped"]).last_error or "")
    with Session(engine) as session:
        suppressions = session.exec(select(Suppression)).scalars().all()  # type: ignore[call-overload]
    assert [(s.customer_id, s.channel, s.reason, s.source) for s in suppressions] == [
        (stopped, "sms", "sms_stop", "twilio:21610")
    ]


def test_rate_limit_answers_wait_at_least_retry_after(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    key = world.message(world.customer(), "sms", "card_expiry_sms", step=1)
    fake.plan(
        "twilio",
        Answer(
            429,
            b'{"code": 20429, "message": "Too Many Requests", "status": 429}',
            (("Retry-After", "900"),),
        ),
    )
    summary = dispatch_due(engine, NOW, channels(fake), options=FAST)
    assert summary.retried == 1
    row = world.row(key)
    assert row.status == "pending" and row.scheduled_at >= NOW + timedelta(seconds=900)
    assert "HTTP 429, Twilio error 20429" in (row.last_error or "")


def test_bad_credentials_stop_the_run_and_lose_nothing(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    keys = [world.message(world.customer()) for _ in range(5)]
    summary = dispatch_due(engine, NOW, channels(fake, key="SG.wrong"), options=FAST)
    assert not summary.complete and summary.sent == 0
    assert "RETAIN_SENDGRID_API_KEY" in (summary.error or "")
    states = Counter((world.row(k).status, world.row(k).attempts) for k in keys)
    assert states == Counter({("pending", 0): 5})
    fine = dispatch_due(engine, NOW, channels(fake), options=FAST)
    assert fine.sent == 5 and fine.complete


def test_timeouts_after_acceptance_are_reconciled_not_resent(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    customer = world.customer()
    email_key = world.message(customer)
    sms_key = world.message(customer, "sms", "card_expiry_sms", step=1)
    lost = world.message(world.customer())
    fake.plan("sendgrid", Answer(202, accept=True, delay=1.0), Answer(500, b"{}"))
    fake.plan("twilio", Answer(201, accept=True, delay=1.0))
    options = DispatchOptions(batch_size=10, senders=1, call_budget=1.0)
    summary = dispatch_due(engine, NOW, channels(fake, timeout=0.3), options=options)
    assert (summary.unknown, summary.sent, summary.retried) == (2, 0, 1)
    assert {world.row(email_key).status_reason, world.row(sms_key).status_reason} == {"in_flight"}
    # After the recheck time: both are found at the provider and marked sent, without a resend.
    later = dispatch_due(engine, NOW + timedelta(minutes=10), channels(fake), options=options)
    assert later.reconciled == 2 and later.sent == 1  # the 500 one is retried and sent
    assert Counter(fake.accepted_ids("sendgrid")) == Counter(
        {str(world.row(email_key).id): 1, str(world.row(lost).id): 1}
    )
    assert fake.accepted_ids("twilio") == [str(world.row(sms_key).id)]
    assert world.row(email_key).provider_message_id == fake.accepted["sendgrid"][0]["id"]
    assert world.row(sms_key).provider_message_id == fake.accepted["twilio"][0]["id"]


def test_an_exception_inside_a_batch_is_reported_and_the_batch_released(
    engine: Engine, world: World, fake: FakeProviders
) -> None:
    keys = [world.message(world.customer()) for _ in range(3)]

    def broken(_experiment_id: int) -> PolicySettings:
        raise RuntimeError("settings store unavailable")

    summary = dispatch_due(engine, NOW, channels(fake), options=FAST, settings_for=broken)
    assert not summary.complete
    assert "RuntimeError: settings store unavailable" in (summary.error or "")
    assert "3 claimed message(s) put back" in (summary.error or "")
    assert {world.row(k).status for k in keys} == {"pending"}
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(SendAttempt)).one() == (0,)  # type: ignore[call-overload]
