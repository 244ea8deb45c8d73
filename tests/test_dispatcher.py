"""The dispatcher against a real database (SQLite, or PostgreSQL with RETAIN_DATABASE_URL)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from messaging.channels import ChannelError, OutboxChannel, OutgoingMessage, Receipt, SendRecord
from messaging.dispatcher import MAX_ATTEMPTS, dispatch_due
from messaging.links import sign
from messaging.policy import NO_LIMITS, PolicySettings
from messaging.render import message_token, sms_segments
from models.customer_data import ActivityEvent
from models.db import make_engine, session_scope
from models.records import (
    Experiment,
    Message,
    OfferGrant,
    Suppression,
)
from tests.dispatch_world import ASSIGNED, NOW, Recording, World


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def test_sends_due_messages_once_and_writes_readable_files(
    engine: Engine, world: World, tmp_path: Path
) -> None:
    outbox = OutboxChannel(tmp_path)
    first, second = world.customer(), world.customer(locale="sv-SE")
    email_1 = world.message(first)
    email_2 = world.message(second)
    sms_1 = world.message(first, "sms", "card_expiry_sms", step=1)
    later = world.message(second, "sms", "card_expiry_sms", step=1, at=NOW + timedelta(days=3))

    summary = dispatch_due(engine, NOW, {"email": outbox, "sms": outbox})
    assert (summary.sent, summary.skipped, summary.deferred, summary.failed) == (3, {}, 0, 0)

    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))
    assert len([f for f in files if f.endswith(".txt")]) == 3
    assert len([f for f in files if f.endswith(".html")]) == 2
    for key in (email_1, email_2, sms_1):
        row = world.row(key)
        assert (row.status, row.attempts, row.provider, row.sent_at) == ("sent", 1, "outbox", NOW)
        assert row.provider_message_id is not None and row.provider_message_id.startswith("outbox-")
    untouched = world.row(later)
    assert (untouched.status, untouched.attempts, untouched.claimed_by) == ("pending", 0, None)

    email_file = next(tmp_path.glob("card-expiry-reminder/email/*.txt"))
    content = {
        p.read_text(encoding="utf-8") for p in tmp_path.glob("card-expiry-reminder/email/*.txt")
    }
    english = next(c for c in content if "anna1@example.com" in c)
    assert "Subject: Your Visa card ending in 4242 expires at the end of November 2026" in english
    assert f"X-Retain-Key: {email_1}" in english
    assert "Hi Anna1," in english
    assert (
        f"https://app.example.com/pay/cus_0001/{sign('pay', 'cus_0001', message_token(email_1))}"
        in english
    )
    swedish = next(c for c in content if "anna2@example.com" in c)
    assert "Subject: Ditt Visa-kort som slutar på 4242 går ut i slutet av november 2026" in swedish
    assert email_file.suffix == ".txt"
    sms_text = next(tmp_path.glob("card-expiry-reminder/sms/*.txt")).read_text(encoding="utf-8")
    assert "To: +46701234567" in sms_text
    body = sms_text.split("\n\n", 1)[1].rstrip("\n")
    assert f"Segments: {sms_segments(body)}" in sms_text and sms_segments(body) == 1  # short token
    assert "your Visa ending 4242 expires 11/2026" in sms_text

    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.*")}
    again = dispatch_due(engine, NOW, {"email": outbox, "sms": outbox})
    assert (again.sent, again.skipped, again.deferred, again.failed, again.retried) == (
        0,
        {},
        0,
        0,
        0,
    )
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.*")} == mtimes


def test_policy_skips_are_recorded_with_reasons(engine: Engine, world: World) -> None:
    channel = Recording()
    no_consent = world.message(world.customer(email_consent=False))
    no_address = world.message(world.customer(email=None))
    suppressed_customer = world.customer()
    world.add(
        Suppression(
            customer_id=suppressed_customer,
            channel="email",
            reason="unsubscribe",
            created_at=NOW - timedelta(days=1),
        )
    )
    suppressed = world.message(suppressed_customer)
    capped_customer = world.customer()
    for step in (5, 6):  # two emails sent within the 7-day cap window (max 2)
        world.message(capped_customer, step=step, status="sent", sent_at=NOW - timedelta(days=2))
    capped = world.message(capped_customer)
    old_sends = world.customer()
    for step in (5, 6):  # outside the window: do not count
        world.message(old_sends, step=step, status="sent", sent_at=NOW - timedelta(days=8))
    fine = world.message(old_sends)

    summary = dispatch_due(engine, NOW, {"email": channel})
    assert summary.skipped == {
        "frequency_cap": 1,
        "no_address": 1,
        "no_consent": 1,
        "suppressed": 1,
    }
    assert summary.sent == 1 and channel.keys == [fine]
    for key, reason in [
        (no_consent, "no_consent"),
        (no_address, "no_address"),
        (suppressed, "suppressed"),
        (capped, "frequency_cap"),
    ]:
        row = world.row(key)
        assert (row.status, row.status_reason, row.attempts) == ("skipped", reason, 0)


def test_frequency_cap_counts_sends_within_the_same_run(engine: Engine, world: World) -> None:
    channel = Recording()
    customer = world.customer()
    keys = [world.message(customer, step=step) for step in range(3)]
    summary = dispatch_due(engine, NOW, {"email": channel}, batch_size=2)
    assert summary.sent == 2 and summary.skipped == {"frequency_cap": 1}
    assert [world.row(k).status for k in keys] == ["sent", "sent", "skipped"]


def test_unless_conditions_are_evaluated_in_sql(engine: Engine, world: World) -> None:
    channel = Recording()
    updated, updated_before, updated_later = world.customer(), world.customer(), world.customer()
    world.add(
        world.card(updated, ASSIGNED + timedelta(days=1)),  # after assignment: condition holds
        world.card(updated_before, ASSIGNED - timedelta(days=1)),  # before assignment: not
        world.card(updated_later, NOW + timedelta(hours=1)),  # in the future: not yet
    )
    onboarded, offer_taken, offer_open, unsubscribed = (world.customer() for _ in range(4))
    world.add(
        ActivityEvent(
            customer_id=onboarded,
            kind="milestone",
            name="onboarding_completed",
            occurred_at=NOW - timedelta(days=1),
        ),
        OfferGrant(
            experiment_id=world.experiment_id,
            customer_id=offer_taken,
            offer_kind="discount",
            percent_off=30,
            months=3,
            offered_at=ASSIGNED,
            accepted_at=NOW - timedelta(hours=2),
        ),
        OfferGrant(
            experiment_id=world.experiment_id,
            customer_id=offer_open,
            offer_kind="discount",
            percent_off=30,
            months=3,
            offered_at=ASSIGNED,
            accepted_at=None,
        ),
        Suppression(
            customer_id=unsubscribed,
            channel="email",
            reason="unsubscribe",
            created_at=NOW - timedelta(days=1),
        ),
    )
    cases = {
        world.message(
            updated, "sms", "card_expiry_sms", unless="payment_method_updated"
        ): "skipped",
        world.message(
            updated_before, "sms", "card_expiry_sms", unless="payment_method_updated"
        ): "sent",
        world.message(
            updated_later, "sms", "card_expiry_sms", unless="payment_method_updated"
        ): "sent",
        world.message(
            onboarded, "sms", "card_expiry_sms", unless="onboarding_completed"
        ): "skipped",
        world.message(offer_open, "sms", "card_expiry_sms", unless="onboarding_completed"): "sent",
        world.message(offer_taken, "sms", "card_expiry_sms", unless="offer_accepted"): "skipped",
        world.message(
            offer_open, "sms", "card_expiry_sms", step=2, unless="offer_accepted"
        ): "sent",
        # suppressed on email only; the SMS is skipped because of the unless condition
        world.message(unsubscribed, "sms", "card_expiry_sms", unless="unsubscribed"): "skipped",
        world.message(onboarded, "sms", "card_expiry_sms", step=3): "sent",  # no condition
    }
    summary = dispatch_due(engine, NOW, {"sms": channel})
    assert {k: world.row(k).status for k in cases} == cases
    assert summary.skipped == {"condition_met": 4}
    assert all(
        world.row(k).status_reason == "condition_met"
        for k, status in cases.items()
        if status == "skipped"
    )


def test_quiet_hours_defer_then_send(engine: Engine, world: World) -> None:
    channel = Recording()
    key = world.message(world.customer())
    evening = datetime(2026, 11, 10, 21, 30, tzinfo=UTC)  # 22:30 in Stockholm
    summary = dispatch_due(engine, evening, {"email": channel})
    assert (summary.sent, summary.deferred) == (0, 1)
    row = world.row(key)
    morning = datetime(2026, 11, 11, 7, 0, tzinfo=UTC)  # 08:00 in Stockholm
    assert (row.status, row.status_reason, row.scheduled_at, row.attempts) == (
        "pending",
        "quiet_hours",
        morning,
        0,
    )
    assert dispatch_due(engine, morning - timedelta(minutes=1), {"email": channel}).sent == 0
    assert dispatch_due(engine, morning, {"email": channel}).sent == 1
    assert world.row(key).status == "sent" and channel.keys == [key]


def test_settings_for_overrides_the_spec(engine: Engine, world: World) -> None:
    channel = Recording()
    world.message(world.customer())
    evening = datetime(2026, 11, 10, 21, 30, tzinfo=UTC)
    seen: list[int] = []

    def no_limits(experiment_id: int) -> PolicySettings:
        seen.append(experiment_id)
        return NO_LIMITS

    summary = dispatch_due(engine, evening, {"email": channel}, settings_for=no_limits)
    assert summary.sent == 1 and seen == [world.experiment_id]


def test_transient_error_is_retried_then_sent(engine: Engine, world: World) -> None:
    channel = Recording(fail_with=[ChannelError("429 Too Many Requests")])
    key = world.message(world.customer())
    summary = dispatch_due(engine, NOW, {"email": channel})
    assert (summary.sent, summary.retried, summary.failed) == (0, 1, 0)
    row = world.row(key)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "429 Too Many Requests")
    # Backoff with jitter: one minute times a factor in [0.5, 1).
    assert NOW + timedelta(seconds=30) <= row.scheduled_at < NOW + timedelta(minutes=1)
    assert dispatch_due(engine, NOW + timedelta(seconds=29), {"email": channel}).sent == 0
    assert dispatch_due(engine, NOW + timedelta(minutes=1), {"email": channel}).sent == 1
    row = world.row(key)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 2, NOW + timedelta(minutes=1))
    assert channel.keys == [key]


def test_transient_errors_give_up_after_max_attempts(engine: Engine, world: World) -> None:
    channel = Recording(fail_with=[ChannelError(f"503 outage {i}") for i in range(10)])
    key = world.message(world.customer())
    when = NOW
    for _ in range(MAX_ATTEMPTS - 1):
        assert dispatch_due(engine, when, {"email": channel}).retried == 1
        when = world.row(key).scheduled_at
    last = dispatch_due(engine, when, {"email": channel})
    assert (last.retried, last.failed) == (0, 1)
    row = world.row(key)
    assert (row.status, row.status_reason, row.attempts) == ("failed", "gave_up", MAX_ATTEMPTS)
    assert row.last_error == f"gave up after {MAX_ATTEMPTS} attempts; last error: 503 outage 4"
    assert channel.keys == []


def test_permanent_error_fails_with_the_error(engine: Engine, world: World) -> None:
    channel = Recording(fail_with=[ChannelError("21211 invalid 'To' number", permanent=True)])
    key = world.message(world.customer(), "sms", "card_expiry_sms")
    summary = dispatch_due(engine, NOW, {"sms": channel})
    assert (summary.sent, summary.failed, summary.retried) == (0, 1, 0)
    row = world.row(key)
    assert (row.status, row.status_reason, row.attempts) == ("failed", "permanent_error", 1)
    assert row.last_error == "21211 invalid 'To' number"
    assert dispatch_due(engine, NOW + timedelta(days=1), {"sms": channel}).failed == 0


def test_template_error_fails_the_message_not_the_batch(engine: Engine, world: World) -> None:
    channel = Recording()
    customer = world.customer()
    # The email_sms arm has no offer, so the offer template cannot render.
    broken = world.message(customer, template="offer_discount")
    fine = world.message(world.customer())
    offer = world.message(world.customer(), template="offer_discount", arm="discount")
    summary = dispatch_due(engine, NOW, {"email": channel})
    assert (summary.sent, summary.failed) == (2, 1)
    row = world.row(broken)
    assert (row.status, row.status_reason, row.attempts) == ("failed", "template_error", 0)
    assert row.last_error is not None
    assert "messaging/templates/offer_discount/en.email.txt.j2:1" in row.last_error
    assert set(channel.keys) == {fine, offer}
    assert any("30% off" in body for body in channel.bodies)


def test_channels_not_configured_stay_pending(engine: Engine, world: World) -> None:
    key = world.message(world.customer(), "sms", "card_expiry_sms")
    assert dispatch_due(engine, NOW, {"email": Recording()}).sent == 0
    assert world.row(key).status == "pending"


def test_stopped_experiment_skips(engine: Engine, world: World) -> None:
    key = world.message(world.customer())
    with session_scope(engine) as session:
        experiment = session.get(Experiment, world.experiment_id)
        assert experiment is not None
        experiment.status = "stopped"
    summary = dispatch_due(engine, NOW, {"email": Recording()})
    assert summary.skipped == {"experiment_stopped": 1}
    assert world.row(key).status_reason == "experiment_stopped"


def test_unexpected_channel_error_is_reconciled_not_blindly_resent(
    engine: Engine, world: World
) -> None:
    crashing = Recording(fail_with=[RuntimeError("connection reset after request was sent")])
    key = world.message(world.customer())
    summary = dispatch_due(engine, NOW, {"email": crashing}, worker_id="worker-a")
    assert (summary.unknown, summary.sent, summary.failed) == (1, 0, 0)
    row = world.row(key)
    assert (row.status, row.status_reason, row.claimed_by) == ("sending", "in_flight", "worker-a")
    assert row.last_error == "RuntimeError: connection reset after request was sent"
    # Before the recheck time nobody touches it; after, the provider is asked: not there, so it
    # is sent again, once.
    assert dispatch_due(engine, NOW + timedelta(minutes=1), {"email": crashing}).sent == 0
    later = dispatch_due(engine, NOW + timedelta(minutes=3), {"email": crashing})
    assert (later.reconciled, later.sent) == (1, 1)
    assert crashing.keys == [key]
    assert world.row(key).status == "sent"


def test_unknown_outcome_found_at_the_provider_is_marked_sent(engine: Engine, world: World) -> None:
    channel = Recording()
    key = world.message(world.customer())

    class AcceptsThenTimesOut(Recording):
        def send(self, message: OutgoingMessage) -> Receipt:
            channel.send(message)  # the provider accepted it ...
            raise ChannelError("read timeout", unknown_outcome=True)  # ... the answer was lost

        def find_sent(self, record: SendRecord) -> Receipt | None:
            return channel.find_sent(record)

    flaky = AcceptsThenTimesOut()
    assert dispatch_due(engine, NOW, {"email": flaky}).unknown == 1
    later = dispatch_due(engine, NOW + timedelta(minutes=5), {"email": flaky})
    assert (later.reconciled, later.sent) == (1, 0)
    row = world.row(key)
    assert (row.status, row.status_reason, row.provider_message_id) == (
        "sent",
        "reconciled",
        "rec-1",
    )
    assert row.sent_at == NOW  # when it was handed over
    assert channel.keys == [key]


def test_an_abandoned_claim_expires_and_is_claimed_again(engine: Engine, world: World) -> None:
    key = world.message(world.customer())
    with session_scope(engine) as session:
        row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
        row.status, row.status_reason, row.claimed_by = "sending", "claimed", "crashed-worker"
        row.lease_expires_at = NOW + timedelta(minutes=1)
    channel = Recording()
    assert dispatch_due(engine, NOW, {"email": channel}).sent == 0  # lease still held
    assert dispatch_due(engine, NOW + timedelta(minutes=2), {"email": channel}).sent == 1
    assert channel.keys == [key]


def test_concurrent_dispatchers_send_each_message_exactly_once(
    database_url: str, engine: Engine, world: World, tmp_path: Path
) -> None:
    customers = [world.customer() for _ in range(20)]
    keys = [world.message(c, step=s) for c in customers for s in (0,)]
    keys += [world.message(c, "sms", "card_expiry_sms", step=1) for c in customers]
    recording = Recording()
    outbox = OutboxChannel(tmp_path)

    @dataclass
    class Both:
        provider: str = "both"

        def send(self, message: OutgoingMessage) -> Receipt:
            recording.send(message)
            return outbox.send(message)

    channel = Both()
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(name: str) -> None:
        own_engine = make_engine(database_url)
        try:
            barrier.wait()
            results[name] = dispatch_due(
                own_engine, NOW, {"email": channel, "sms": channel}, worker_id=name, batch_size=3
            )
        except Exception as error:  # surfaced below
            results[name] = error
        finally:
            own_engine.dispose()

    threads = [threading.Thread(target=run, args=(f"worker-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert not errors, errors
    assert Counter(recording.keys) == Counter(keys)  # every key exactly once
    assert sum(r.sent for r in results.values()) == len(keys)  # type: ignore[attr-defined]
    assert len(list(tmp_path.rglob("*.txt"))) == len(keys)
    with Session(engine) as session:
        statuses = Counter(m.status for m in session.exec(select(Message)))
    assert statuses == Counter({"sent": len(keys)})
