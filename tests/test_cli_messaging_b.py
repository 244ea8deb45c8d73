"""``retain preview``, ``retain webhooks serve`` and the SMS-budget warnings of ``retain validate``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from twilio.request_validator import RequestValidator
from typer.testing import CliRunner

from flows.cli import app
from messaging.links import verify_link_token
from models.customer_data import Invoice, Subscription
from models.records import Suppression
from tests.webhook_support import add_customer

DEFINITIONS = Path(__file__).resolve().parent.parent / "experiments" / "definitions"
DUNNING = DEFINITIONS / "dunning.yaml"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "cli-test-secret")


def test_validate_warns_when_an_sms_can_exceed_the_budget(tmp_path: Path) -> None:
    tight = tmp_path / "tight.yaml"
    text = DUNNING.read_text().replace("sms_max_segments: 2", "sms_max_segments: 1")
    tight.write_text(text.replace("key: dunning", "key: dunning-tight"))
    result = runner.invoke(app, ["validate", str(tight), str(DUNNING)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 5  # en, nl, sv, th, zh of dunning_sms; the shipped file is clean
    assert all(
        str(tight) in w and "dunning_sms" in w and "sms_max_segments: 1" in w for w in warnings
    )
    assert "ok 2 experiment file(s) valid" in result.output


def test_preview_of_a_sample_customer_in_a_locale(tmp_path: Path) -> None:
    out = tmp_path / "html"
    result = runner.invoke(
        app, ["preview", str(DUNNING), "--arm", "email_sms", "--locale", "sv-SE", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Din betalning på 499,00\u00a0kr gick inte igenom" in result.output
    assert re.search(r"Segments: 1 \(GSM-7, \d+ characters\)", result.output)
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "dunning.email_sms.0.dunning_failed.sv.html",
        "dunning.email_sms.2.dunning_reminder.sv.html",
        "dunning.email_sms.3.dunning_final.sv.html",
    ]
    html = (out / files[0]).read_text()
    assert '<html lang="sv">' in html and "Uppdatera betalningsuppgifter</a>" in html
    chinese = runner.invoke(
        app, ["preview", str(DUNNING), "--arm", "email_sms", "--locale", "zh-CN", "--out", str(out)]
    )
    assert "Segments: 2 (UCS-2" in chinese.output and "¥349.00" in chinese.output


def test_preview_of_a_real_customer_uses_their_data(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    cid = add_customer(engine, "cus_sanne", "sanne@example.com", "+31612345678")
    due = datetime.now(UTC) - timedelta(days=2)
    with Session(engine) as session:
        customer = session.get(__import__("models.customer_data").customer_data.Customer, cid)
        assert customer is not None
        customer.name, customer.locale, customer.currency = "Sanne <i>de Vries</i>", "nl-NL", "EUR"
        session.add(customer)
        session.add(
            Subscription(
                customer_id=cid,
                plan="Business",
                billing_interval="month",
                mrr_cents=9_900,
                status="past_due",
                started_at=due - timedelta(days=300),
                current_period_end=due + timedelta(days=30),
            )
        )
        session.add(Invoice(customer_id=cid, amount_cents=9_900, status="failed", due_at=due))
        session.commit()
    result = runner.invoke(
        app,
        [
            "preview",
            str(DUNNING),
            "--arm",
            "email",
            "--customer",
            "cus_sanne",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Je betaling van €\u00a099,00 is niet gelukt" in result.output
    assert "Hoi Sanne," in result.output and "voor Business af te schrijven" in result.output
    url = re.search(r"https://app\.example\.com/pay/cus_sanne/(\S+)", result.output)
    assert url is not None and verify_link_token("pay", "cus_sanne", url.group(1)) is not None
    html = (tmp_path / "dunning.email.0.dunning_failed.nl.html").read_text()
    assert "&lt;i&gt;" not in html  # only the first name is used: "Sanne"
    assert "Hoi Sanne," in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--arm", "nope", "--locale", "en"],
            "has no arm 'nope'; use one of: control, email, email_sms",
        ),
        (["--arm", "email", "--locale", "en", "--customer", "x"], "exclude each other"),
    ],
)
def test_preview_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["preview", str(DUNNING), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_preview_of_an_unknown_customer(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    result = runner.invoke(
        app, ["preview", str(DUNNING), "--arm", "email", "--customer", "cus_nobody"]
    )
    assert result.exit_code == 2 and "no customer 'cus_nobody'" in result.output


def test_preview_and_validate_do_not_import_prefect(tmp_path: Path) -> None:
    out = str(tmp_path / "html")
    code = (
        "import sys; from typer.testing import CliRunner; from flows.cli import app;"
        f"r = CliRunner().invoke(app, ['preview', {str(DUNNING)!r}, '--arm', 'email', '--locale', 'th', '--out', {out!r}]);"
        f"v = CliRunner().invoke(app, ['validate', {str(DUNNING)!r}]);"
        "assert r.exit_code == 0 and v.exit_code == 0, r.output + v.output;"
        "print('prefect' in sys.modules)"
    )
    env = dict(os.environ, RETAIN_LINK_SECRET="x")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert len(list((tmp_path / "html").glob("*.th.html"))) == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_webhooks_serve_receives_a_signed_stop(engine: Engine, database_url: str) -> None:
    cid = add_customer(engine, "cus_stop", None, "+46701112233")
    port = _free_port()
    public = "https://hooks.retain.test"
    env = dict(
        os.environ,
        RETAIN_DATABASE_URL=database_url,
        RETAIN_TWILIO_AUTH_TOKEN="tw-secret-4711",
        RETAIN_WEBHOOK_PUBLIC_URL=public,
        RETAIN_LINK_SECRET="x",
    )
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "retain"), "webhooks", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # generous: a loaded machine imports slowly
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()  # communicate() on a live server would wait for ever
                raise AssertionError("retain webhooks serve did not come up (stderr below)")
            time.sleep(0.1)
        form = {"MessageSid": "SM" + "e5" * 16, "From": "+46701112233", "Body": "STOP"}
        path = "/webhooks/twilio/inbound"
        signature = RequestValidator("tw-secret-4711").compute_signature(public + path, form)
        response = httpx.post(
            base + path,
            content=urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        assert response.status_code == 200
        with engine.connect() as conn:
            rows = conn.execute(
                select(Suppression.customer_id, Suppression.channel, Suppression.reason)
            ).all()
        assert [tuple(r) for r in rows] == [(cid, "sms", "stop")]
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
        print(err[-2000:], file=sys.stderr)  # shown by pytest when the test fails
    assert "tw-secret-4711" not in out + err  # the auth token is never printed
    assert "Twilio auth token" in out and "set" in out


def test_preview_falls_back_to_the_experiment_default_locale(tmp_path: Path) -> None:
    spec = tmp_path / "dutch.yaml"
    spec.write_text(
        DUNNING.read_text().replace(
            "sms_max_segments: 2}", "sms_max_segments: 2, default_locale: nl}"
        )
    )
    german = runner.invoke(
        app, ["preview", str(spec), "--arm", "email", "--locale", "de-DE", "--out", str(tmp_path)]
    )
    assert german.exit_code == 0, german.output
    assert "(nl)" in german.output and "Hoi " in german.output
    swedish = runner.invoke(
        app, ["preview", str(spec), "--arm", "email", "--locale", "sv-SE", "--out", str(tmp_path)]
    )
    assert "(sv)" in swedish.output and "Hej " in swedish.output
