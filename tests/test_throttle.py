"""Sends paced by Prefect's own rate limits: `retain deploy` creates one per channel at the
configured rate (and updates it when the rate changes), a dispatch takes a slot per message from
it, a limit that is required but missing stops the dispatch with one line, and a dispatch that
cannot finish ends its flow run Failed on the server."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from flows.throttle import limit_name, missing_message, planned_limits
from messaging.dispatcher import DispatchOptions, dispatch_due
from messaging.sending import LimiterError
from messaging.settings import MessagingSettings
from tests.dispatch_world import NOW, Recording, World
from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, FakeProviders
from tests.test_deploy import SPEC, _api, prefect_server  # noqa: F401  (a fixture)

RETAIN = str(Path(sys.executable).with_name("retain"))


class Refusing:
    """A limiter whose shared limit has gone missing after the first ``allow`` calls."""

    def __init__(self, allow: int) -> None:
        self.allow = allow

    def acquire(self) -> None:
        if self.allow <= 0:
            raise LimiterError(missing_message(planned_limits(MessagingSettings())[0]))
        self.allow -= 1


def test_limits_follow_the_configured_rates() -> None:
    settings = MessagingSettings(email_rate_per_second=12.5, sms_rate_per_second=0.2)
    assert [(p.channel, p.name, p.limit, p.per_second) for p in planned_limits(settings)] == [
        ("email", "retain-email-sends", 13, 12.5),
        ("sms", "retain-sms-sends", 1, 0.2),  # a burst is at least one send
    ]
    assert planned_limits(settings)[1].create_command == (
        "prefect gcl create retain-sms-sends --limit 1 --slot-decay-per-second 0.2"
    )


def test_a_refusing_limiter_stops_the_dispatch_and_loses_nothing(engine: Engine) -> None:
    world = World(engine)
    keys = [world.message(world.customer()) for _ in range(6)]
    channel = Recording()
    options = DispatchOptions(batch_size=3, senders=1, limiters={"email": Refusing(allow=2)})
    summary = dispatch_due(engine, NOW, {"email": channel}, options=options)
    assert summary.sent == 2 and channel.keys == keys[:2]
    assert summary.error is not None and "run `retain deploy`" in summary.error
    assert "retain-email-sends" in summary.error
    statuses = Counter(world.row(k).status for k in keys)
    assert statuses == Counter({"sent": 2, "pending": 4})  # the rest waits for the next run
    assert all(world.row(k).attempts == 0 for k in keys[2:])


def _limit(env: dict[str, str], channel: str) -> dict[str, object]:
    return _api(env, "GET", f"/v2/concurrency_limits/{limit_name(channel)}")  # type: ignore[return-value]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RETAIN, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.prefect
def test_deploy_creates_the_limits_and_every_dispatch_takes_its_slots(
    prefect_server: dict[str, str],  # noqa: F811
    engine: Engine,
    database_url: str,
    tmp_path: Path,
) -> None:
    spec = tmp_path / "reminder.yaml"
    spec.write_text(SPEC)
    env = {
        **prefect_server,
        "RETAIN_DATABASE_URL": database_url,
        "RETAIN_EMAIL_RATE_PER_SECOND": "20",
        "RETAIN_SMS_RATE_PER_SECOND": "2.5",
    }
    deploy = ["deploy", "--no-serve", str(spec), "--outbox", str(tmp_path / "outbox")]
    done = _cli(env, *deploy)
    assert done.returncode == 0, done.stderr
    assert "rate limit retain-email-sends: 20 email sends/s, bursts of 20 (created)" in done.stdout
    email, sms = _limit(env, "email"), _limit(env, "sms")
    assert (email["limit"], email["slot_decay_per_second"], email["active"]) == (20, 20.0, True)
    assert (sms["limit"], sms["slot_decay_per_second"]) == (3, 2.5)

    env["RETAIN_EMAIL_RATE_PER_SECOND"] = "30"  # a changed rate is applied on re-deploy
    done = _cli(env, *deploy)
    assert done.returncode == 0, done.stderr
    assert "bursts of 30 (updated)" in done.stdout and "bursts of 3 (unchanged)" in done.stdout
    assert (_limit(env, "email")["limit"], _limit(env, "email")["slot_decay_per_second"]) == (
        30,
        30.0,
    )

    # An operator widens the limits in the UI; slots now decay so slowly that the count after
    # the dispatch is exactly the slots it took: one per message sent.
    for channel in ("email", "sms"):
        url = f"{env['PREFECT_API_URL']}/v2/concurrency_limits/{limit_name(channel)}"
        wide = {"limit": 1000, "slot_decay_per_second": 0.001}
        assert httpx.patch(url, json=wide, timeout=10).status_code == 204
    world = World(engine)
    customers = [world.customer() for _ in range(7)]
    for customer in customers:
        world.message(customer)
        world.message(customer, "sms", "card_expiry_sms", step=1)
    with FakeProviders() as fake:
        env |= {
            "RETAIN_SENDGRID_API_KEY": SENDGRID_KEY,
            "RETAIN_SENDGRID_FROM_EMAIL": "hello@retain.example",
            "RETAIN_SENDGRID_BASE_URL": fake.url,
            "RETAIN_TWILIO_ACCOUNT_SID": TWILIO_SID,
            "RETAIN_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "RETAIN_TWILIO_FROM_NUMBER": "+15005550006",
            "RETAIN_TWILIO_BASE_URL": fake.url,
            "RETAIN_RATE_LIMITER": "prefect",
        }
        done = _cli(env, "dispatch", "--as-of", NOW.isoformat(), "--outbox", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("sent 14,"), done.stdout
        assert (len(fake.accepted_ids("sendgrid")), len(fake.accepted_ids("twilio"))) == (7, 7)
        assert (_limit(env, "email")["active_slots"], _limit(env, "sms")["active_slots"]) == (7, 7)

        # Required but missing: one line saying what to run, nothing sent, the run Failed.
        url = f"{env['PREFECT_API_URL']}/v2/concurrency_limits/{limit_name('sms')}"
        assert httpx.delete(url, timeout=10).status_code == 204
        eid = world.experiment_id
        late = [
            world.message(c, "sms", "card_expiry_sms", step=1, experiment_id=eid) for c in customers
        ]
        done = _cli(env, "dispatch", "--as-of", NOW.isoformat(), "--outbox", str(tmp_path))
    assert done.returncode == 2, done.stdout
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert "'retain-sms-sends' for sms cannot be used" in line and "run `retain deploy`" in line
    assert "Traceback" not in done.stderr + done.stdout
    assert {world.row(key).status for key in late} == {"pending"}
    assert len(fake.accepted_ids("twilio")) == 7
    runs = _api(
        env,
        "POST",
        "/flow_runs/filter",
        json={  # the two `retain dispatch` runs (the deployment's scheduled runs left out)
            "flows": {"name": {"any_": ["dispatch-messages"]}},
            "flow_runs": {"deployment_id": {"is_null_": True}},
            "sort": "START_TIME_DESC",
        },
    )
    last, first = runs  # type: ignore[misc]
    assert first["state"]["type"] == "COMPLETED"
    assert last["state"]["type"] == "FAILED"  # a state to alert on, not Completed
    assert last["state"]["message"].startswith("dispatch incomplete: the Prefect rate limit")
