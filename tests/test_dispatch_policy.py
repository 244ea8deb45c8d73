"""The policy as the dispatcher applies it, on a real database: for every arm alike, at send time,
with the experiment's current spec, frequency caps that hold across concurrent dispatchers,
malformed contact data as recorded skips, and the SMS -> email fallback."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from messaging.channels import OutgoingMessage, Receipt
from messaging.dispatcher import dispatch_due
from models.db import make_engine, session_scope
from models.records import Experiment, ExperimentSnapshot, Message, Suppression
from tests.conftest import ON_POSTGRES
from tests.dispatch_world import NOW, SPEC, Recording, World


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def new_snapshot(world: World, yaml: str, tag: str, current: bool, at: datetime) -> None:
    """Record another snapshot of the experiment's YAML; ``current`` makes it the one in force."""
    with session_scope(world.engine) as session:
        session.add(
            ExperimentSnapshot(
                experiment_id=world.experiment_id, spec_hash=tag * 64, spec_yaml=yaml, created_at=at
            )
        )
        if current:
            experiment = session.get(Experiment, world.experiment_id)
            assert experiment is not None
            experiment.spec_hash = tag * 64


FACTS: list[tuple[str, dict[str, object]]] = [
    ("reachable", {}),
    ("no consent", {"email_consent": False, "sms_consent": False}),
    ("no address", {"email": None, "phone": None}),
    ("bad address", {"email": "anna@", "phone": "not a number"}),
    ("blank phone", {"phone": " "}),
    ("zone is a folder", {"timezone": "Europe"}),
    ("zone abbreviation", {"timezone": "JST"}),
    # (PostgreSQL holds at most 64 characters in the column; SQLite holds any length.)
    ("zone too long", {"timezone": "America/" + "x" * (56 if ON_POSTGRES else 300)}),
    ("evening in Tokyo", {"timezone": "Asia/Tokyo"}),  # 19:00 there at NOW: not quiet
    ("night in Auckland", {"timezone": "Pacific/Auckland"}),  # 23:00 there: quiet
    ("suppressed", {}),
    ("capped", {}),
]


def test_control_and_treatment_get_identical_decisions(engine: Engine, world: World) -> None:
    keys: dict[str, dict[str, list[str]]] = {}
    for name, facts in FACTS:
        keys[name] = {}
        for arm in ("email_sms", "control"):
            customer = world.customer(**facts)
            if name == "suppressed":
                world.add(
                    Suppression(
                        customer_id=customer, channel="email", reason="unsubscribe", created_at=NOW
                    )
                )
            if name == "capped":  # two real sends this week (cap: 2 per 7 days)
                for step in (7, 8):
                    world.message(
                        customer, arm=arm, step=step, status="sent", sent_at=NOW - timedelta(days=1)
                    )
            shadow = arm == "control"
            keys[name][arm] = [
                world.message(customer, arm=arm, shadow=shadow),
                world.message(customer, "sms", "card_expiry_sms", arm=arm, step=1, shadow=shadow),
            ]
    channel = Recording()
    summary = dispatch_due(engine, NOW, {"email": channel, "sms": channel})
    eligible = {"sent": "eligible", "withheld": "eligible"}
    for name, by_arm in keys.items():
        treated = [world.row(k) for k in by_arm["email_sms"]]
        control = [world.row(k) for k in by_arm["control"]]
        for t, c in zip(treated, control, strict=True):
            decision_t = (eligible.get(t.status, t.status), t.status_reason, t.scheduled_at)
            decision_c = (
                eligible.get(c.status, c.status),
                c.status_reason if c.status != "withheld" else None,
                c.scheduled_at,
            )
            assert decision_t == decision_c, name
            assert c.status != "sent" and c.provider is None  # never sent
    assert {world.row(k).status for k in keys["reachable"]["control"]} == {"withheld"}
    # reachable 2, Tokyo 2, suppressed email -> its SMS 1, blank phone -> its email 1, capped
    # email -> its SMS 1: the same seven decisions on both sides.
    assert summary.withheld == summary.sent == 7
    reasons = {
        name: world.row(by_arm["email_sms"][0]).status_reason for name, by_arm in keys.items()
    }
    assert reasons["zone is a folder"] == reasons["zone abbreviation"] == "invalid_timezone"
    assert reasons["zone too long"] == "invalid_timezone"
    assert reasons["bad address"] == "invalid_email"
    assert world.row(keys["bad address"]["email_sms"][1]).status_reason == "invalid_phone"
    assert world.row(keys["blank phone"]["email_sms"][1]).status_reason == "no_address"
    assert reasons["night in Auckland"] == "quiet_hours"
    assert reasons["capped"] == "frequency_cap"
    sent = {
        k for by_arm in keys.values() for k in by_arm["email_sms"] if world.row(k).status == "sent"
    }
    assert Counter(channel.keys) == Counter(sent)  # exactly the eligible treated ones, once


def test_the_current_snapshot_applies_after_a_revert(engine: Engine, world: World) -> None:
    # The YAML went quiet-all-day, then was reverted: the experiment's current hash names the
    # original snapshot again, although the quiet one was created last.
    always_quiet = SPEC.replace('quiet_hours: "21:00-08:00"', 'quiet_hours: "00:00-23:59"')
    new_snapshot(world, always_quiet, "y", current=False, at=NOW - timedelta(days=1))
    key = world.message(world.customer())
    summary = dispatch_due(engine, NOW, {"email": Recording()})
    assert summary.sent == 1 and world.row(key).status == "sent"
    # And when the quiet version is current, it defers.
    new_snapshot(world, always_quiet.replace("00:00-23:59", "00:00-23:58"), "z", True, NOW)
    other = world.message(world.customer())
    assert dispatch_due(engine, NOW, {"email": Recording()}).deferred == 1
    assert world.row(other).status_reason == "quiet_hours"


def test_stop_conditions_and_quiet_hours_are_judged_when_each_message_is_sent(
    engine: Engine, world: World
) -> None:
    updater = world.customer()
    first = world.message(updater, at=NOW - timedelta(minutes=10))
    reminder = world.message(
        updater,
        "sms",
        "card_expiry_sms",
        step=1,
        at=NOW - timedelta(minutes=5),
        unless="payment_method_updated",
    )
    night = world.message(world.customer(), at=NOW - timedelta(minutes=1))
    # The clock moves as the run goes: by the third batch it is 21:01 in Stockholm.
    times: Iterator[datetime] = iter(
        [NOW, NOW, NOW + timedelta(minutes=1)] + [datetime(2026, 11, 10, 20, 1, tzinfo=UTC)] * 10
    )

    class CardUpdatedMidRun(Recording):
        def send(self, message: OutgoingMessage) -> Receipt:
            receipt = super().send(message)
            if message.idempotency_key == first:  # the customer updates the card right away
                world.add(World.card(updater, NOW + timedelta(seconds=30)))
            return receipt

    channel = CardUpdatedMidRun()
    summary = dispatch_due(
        engine, None, {"email": channel, "sms": channel}, batch_size=1, clock=lambda: next(times)
    )
    assert channel.keys == [first]
    assert world.row(reminder).status_reason == "condition_met"
    assert (world.row(night).status, world.row(night).status_reason) == ("pending", "quiet_hours")
    assert summary.sent == 1 and summary.deferred == 1


def test_frequency_cap_holds_across_concurrent_dispatchers(
    database_url: str, engine: Engine, world: World
) -> None:
    customers = [world.customer() for _ in range(4)]
    for customer in customers:
        for step in range(5):
            world.message(customer, step=step)
    channel = Recording()
    barrier = threading.Barrier(3)
    problems: list[BaseException] = []

    def run(name: str) -> None:
        own = make_engine(database_url)
        try:
            barrier.wait()
            summary = dispatch_due(own, NOW, {"email": channel}, worker_id=name, batch_size=2)
            assert summary.complete, summary.error
        except BaseException as error:  # surfaced below
            problems.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, problems
    per_customer = Counter(m.customer_id for m in channel.messages)
    assert per_customer == Counter({c: 2 for c in customers})  # the cap is 2 per 7 days
    with Session(engine) as session:
        statuses = Counter(m.status_reason for m in session.exec(select(Message)).all())
    assert statuses == Counter({None: 8, "frequency_cap": 12})


def test_sms_falls_back_to_email_when_the_step_allows_it(engine: Engine, world: World) -> None:
    fallback = SPEC.replace(
        "unless: payment_method_updated}",
        "unless: payment_method_updated, fallback: email, fallback_template: card_expiry}",
    )
    new_snapshot(world, fallback, "f", current=True, at=NOW)
    no_phone = world.message(world.customer(phone=None), "sms", "card_expiry_sms", step=1)
    no_sms_consent = world.message(
        world.customer(sms_consent=False), "sms", "card_expiry_sms", step=1
    )
    unreachable = world.message(
        world.customer(phone=None, email_consent=False), "sms", "card_expiry_sms", step=1
    )
    channel = Recording()
    summary = dispatch_due(engine, NOW, {"email": channel, "sms": channel})
    assert summary.sent == 2
    for key, why in ((no_phone, "no_address"), (no_sms_consent, "no_consent")):
        row = world.row(key)
        assert (row.status, row.channel, row.status_reason) == ("sent", "email", f"fallback:{why}")
    assert {m.channel for m in channel.messages} == {"email"}
    assert all(m.rendered.subject for m in channel.messages)  # rendered from the email template
    assert (world.row(unreachable).status, world.row(unreachable).status_reason) == (
        "skipped",
        "no_address",
    )
