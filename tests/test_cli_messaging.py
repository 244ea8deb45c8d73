"""`retain channels`, `retain outbox status|recover` and `retain dispatch`: which channel sends
what (secrets never printed), counts by state, recovery, and an incomplete dispatch exiting
non-zero. Settings come from the environment or a Prefect Secret block."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from flows.cli import app
from messaging.channels import OutboxChannel, OutgoingMessage
from messaging.render import RenderedMessage
from messaging.settings import MessagingSettings, SettingsError, build_channels
from models.db import session_scope
from models.dispatch_records import SendAttempt
from models.records import Message
from tests.dispatch_world import World
from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, FakeProviders

runner = CliRunner()
SECRET_KEY = "SG.very-secret-sendgrid-key-4711"
SECRET_TOKEN = "tw-secret-auth-token-0815"
VARIABLES = [
    "RETAIN_SENDGRID_API_KEY",
    "RETAIN_SENDGRID_API_KEY_BLOCK",
    "RETAIN_SENDGRID_FROM_EMAIL",
    "RETAIN_SENDGRID_BASE_URL",
    "RETAIN_TWILIO_ACCOUNT_SID",
    "RETAIN_TWILIO_AUTH_TOKEN",
    "RETAIN_TWILIO_AUTH_TOKEN_BLOCK",
    "RETAIN_TWILIO_FROM_NUMBER",
    "RETAIN_TWILIO_MESSAGING_SERVICE_SID",
    "RETAIN_TWILIO_BASE_URL",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


def configure(monkeypatch: pytest.MonkeyPatch, base: str = "http://127.0.0.1:9") -> None:
    monkeypatch.setenv("RETAIN_SENDGRID_API_KEY", SECRET_KEY)
    monkeypatch.setenv("RETAIN_SENDGRID_FROM_EMAIL", "hello@retain.example")
    monkeypatch.setenv("RETAIN_SENDGRID_BASE_URL", base)
    monkeypatch.setenv("RETAIN_TWILIO_ACCOUNT_SID", TWILIO_SID)
    monkeypatch.setenv("RETAIN_TWILIO_AUTH_TOKEN", SECRET_TOKEN)
    monkeypatch.setenv("RETAIN_TWILIO_MESSAGING_SERVICE_SID", "MG" + "2" * 32)
    monkeypatch.setenv("RETAIN_TWILIO_BASE_URL", base)


def test_without_settings_everything_goes_to_the_outbox() -> None:
    result = runner.invoke(app, ["channels"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "outbox" in line]
    assert len(lines) == 2 and "complete" in lines[0] and "complete" in lines[1]
    channels = build_channels(MessagingSettings(), Path("unused"))
    assert all(isinstance(c, OutboxChannel) for c in channels.values())


def test_channels_show_providers_and_never_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch)
    result = runner.invoke(app, ["channels"])
    assert result.exit_code == 0, result.output
    assert "sendgrid" in result.output and "twilio" in result.output
    assert result.output.count("set (hidden)") == 2
    assert TWILIO_SID in result.output  # an account id is not a secret
    for secret in (SECRET_KEY, SECRET_TOKEN):
        assert secret not in result.output
        for part in (secret[:8], secret[-6:]):
            assert part not in result.output
    assert SECRET_KEY not in repr(MessagingSettings())


def test_incomplete_settings_are_named_and_never_fall_back_silently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETAIN_SENDGRID_API_KEY", SECRET_KEY)
    result = runner.invoke(app, ["channels"])
    assert result.exit_code == 2
    assert "RETAIN_SENDGRID_FROM_EMAIL" in result.output and SECRET_KEY not in result.output
    with pytest.raises(
        SettingsError, match="sendgrid \\(email\\) lacks RETAIN_SENDGRID_FROM_EMAIL"
    ):
        build_channels(MessagingSettings(), tmp_path)
    result = runner.invoke(app, ["dispatch", "--outbox", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error channels: sendgrid (email) lacks")
    assert "Traceback" not in result.output and SECRET_KEY not in result.output
    monkeypatch.setenv("RETAIN_SENDGRID_TIMEOUT_SECONDS", "soon")
    result = runner.invoke(app, ["channels"])
    assert result.exit_code == 2 and result.output.startswith("error settings:")


def test_configured_channels_reach_the_fake_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeProviders(sendgrid_key=SECRET_KEY, twilio_token=SECRET_TOKEN) as fake:
        configure(monkeypatch, fake.url)
        channels = build_channels(MessagingSettings(), Path("unused"))
        rendered = RenderedMessage("sms", None, "hello", None, 1)
        message = OutgoingMessage("k", "sms", "+46701234567", rendered, 1, "e", "a", 5)
        assert channels["sms"].send(message).provider == "twilio"
        assert fake.sends("twilio")[0].form()["MessagingServiceSid"] == ["MG" + "2" * 32]
        assert channels["email"].provider == "sendgrid"


def test_outbox_status_and_recover(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    world = World(engine)
    now = datetime.now(UTC)
    world.message(world.customer())
    claimed = world.message(world.customer(), step=1)
    flying = world.message(world.customer(), step=2)
    lost = world.message(world.customer(), step=3)
    with session_scope(engine) as session:
        for key, reason in ((claimed, "claimed"), (flying, "in_flight"), (lost, "in_flight")):
            row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
            row.status, row.status_reason, row.claimed_by = "sending", reason, "dead-worker"
            row.lease_expires_at = now - timedelta(minutes=1)
            if reason == "in_flight":
                session.add(
                    SendAttempt(
                        message_id=row.id or 0,
                        attempt=1,
                        worker="dead-worker",
                        channel="email",
                        address="x@example.com",
                        body_sha256="0" * 64,
                        started_at=now - timedelta(minutes=6),
                    )
                )
    # The dead worker had written one of the two in-flight messages before it died.
    outbox = tmp_path / "outbox"
    sent_file = OutboxChannel(outbox).path_for(
        OutgoingMessage(
            flying, "email", "x", RenderedMessage("email", "s", "t", None, None), 1,
            "card-expiry-reminder", "email_sms",
        )
    )  # fmt: skip
    sent_file.parent.mkdir(parents=True)
    sent_file.write_text("To: x\n")

    status = runner.invoke(app, ["outbox", "status"])
    assert status.exit_code == 0, status.output
    cells = [[c.strip() for c in line.split("│")[1:4]] for line in status.output.splitlines()]
    table = {row[0]: row[1:] for row in cells if len(row) == 3}
    assert table["pending"] == ["1", ""]
    assert table["sending (claimed)"] == ["1", "1"]  # messages, of which lease expired
    assert table["sending (in_flight)"] == ["2", "2"]

    recovered = runner.invoke(app, ["outbox", "recover", "--outbox", str(outbox)])
    assert recovered.exit_code == 0, recovered.output
    assert "released 1 expired claim(s), reconciled 2 message(s) in flight; 0 still sending" in (
        recovered.output
    )
    assert (world.row(flying).status, world.row(flying).status_reason) == ("sent", "reconciled")
    assert world.row(lost).status == "pending"
    assert world.row(claimed).status == "pending"


@pytest.mark.slow
def test_an_incomplete_dispatch_exits_non_zero_and_secret_blocks_load(
    prefect_api: None,
    engine: Engine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.blocks.system import Secret

    Secret(value="SG.from-a-block").save("retain-test-sendgrid", overwrite=True)
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    world = World(engine)
    key = world.message(world.customer())
    with FakeProviders(sendgrid_key="SG.from-a-block") as fake:
        configure(monkeypatch, fake.url)
        monkeypatch.setenv("RETAIN_SENDGRID_API_KEY", "SG.revoked")
        # The flow itself reports the incomplete run (and Prefect's log handlers are set up
        # here, outside the CLI runner's temporary streams).
        from flows.pipeline import DispatchIncomplete, dispatch_messages

        with pytest.raises(DispatchIncomplete) as incomplete:  # the flow run ends Failed
            dispatch_messages(str(tmp_path))
        summary = incomplete.value.summary
        assert not summary.complete and "check RETAIN_SENDGRID_API_KEY" in (summary.error or "")
        result = runner.invoke(app, ["dispatch", "--outbox", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert "error dispatch: the dispatch did not finish" in result.output
        assert "RETAIN_SENDGRID_API_KEY" in result.output and "Traceback" not in result.output
        assert world.row(key).status == "pending"
        # The key from a Prefect Secret block (loaded only because it is named).
        monkeypatch.delenv("RETAIN_SENDGRID_API_KEY")
        monkeypatch.setenv("RETAIN_SENDGRID_API_KEY_BLOCK", "retain-test-sendgrid")
        result = runner.invoke(app, ["dispatch", "--outbox", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1].startswith("sent 1,")  # after the demo-key warning
        assert fake.sends("sendgrid")[-1].headers["Authorization"] == "Bearer SG.from-a-block"
        assert "SG.from-a-block" not in result.output
    assert world.row(key).status == "sent"
    assert SENDGRID_KEY and TWILIO_TOKEN  # the defaults stay unused here
