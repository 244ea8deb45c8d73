"""Twilio status callbacks and inbound messages, through the real app over HTTP, and the one-click
unsubscribe link; asserted on the database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator

from messaging.links import message_ref, sign
from messaging.render import build_links
from messaging.webhooks import WebhookSettings, create_app
from messaging.webhooks.events import keyword
from messaging.webhooks.verify import verify_twilio
from models.delivery import delivery_of
from models.records import DeliveryEvent, Suppression
from tests.webhook_support import T0, TWILIO_TOKEN, add_customer, add_sent_message, serve

SID = "SM" + "a1" * 16
PUBLIC = "https://hooks.retain.test"


@dataclass
class Hook:
    base: str
    engine: Engine
    anna: int
    message_id: int

    def post(
        self,
        path: str,
        form: dict[str, str],
        *,
        signed_url: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        url = signed_url or PUBLIC + path
        if signature is None:
            signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
        return httpx.post(
            self.base + path,
            content=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
            timeout=10,
        )


@pytest.fixture
def hook(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "test-link-secret")
    anna = add_customer(engine, "cus_anna", "anna@example.com", "+46701234567")
    message_id = add_sent_message(engine, anna, "cus_anna", "sms", SID)
    settings = WebhookSettings(twilio_auth_token=TWILIO_TOKEN, public_url=PUBLIC, max_body=8_000)
    with serve(create_app(engine, settings, clock=T0.timestamp)) as base:
        yield Hook(base, engine, anna, message_id)


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(DeliveryEvent)).scalar_one())


def suppressions(engine: Engine) -> set[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Suppression.customer_id, Suppression.channel, Suppression.reason)
        )
        return {(int(c), ch, r) for c, ch, r in rows}


def status_form(status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": SID,
        "MessageStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+46701234567",
        "From": "+15005550006",
        **extra,
    }


def test_status_callbacks_move_the_message_once(hook: Hook) -> None:
    path = f"/webhooks/twilio/status?retain_message_id={hook.message_id}"
    for status in ("queued", "sent", "delivered"):
        assert hook.post(path, status_form(status)).status_code == 204
    assert hook.post(path, status_form("sent")).status_code == 204  # a replay, out of order
    state = delivery_of(hook.engine, hook.message_id)
    assert state is not None and (state.status, state.provider_status) == ("delivered", "delivered")
    assert state.delivered_at is not None
    assert stored(hook.engine) == 3  # SID + status is stored once


def test_the_sid_alone_finds_the_message_and_error_21610_suppresses(hook: Hook) -> None:
    path = "/webhooks/twilio/status"
    response = hook.post(path, status_form("undelivered", ErrorCode="21610"))
    assert response.status_code == 204
    state = delivery_of(hook.engine, hook.message_id)
    assert state is not None and (state.status, state.error_code) == ("undelivered", "21610")
    assert suppressions(hook.engine) == {(hook.anna, "sms", "stop")}


def test_bad_signatures_and_bodies_change_nothing(hook: Hook) -> None:
    path = "/webhooks/twilio/status"
    form = status_form("delivered")
    good = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, form)
    tampered = dict(form, MessageStatus="failed")
    assert hook.post(path, tampered, signature=good).status_code == 403
    assert hook.post(path, form, signature="").status_code == 403
    other_host = "https://evil.example" + path
    assert hook.post(path, form, signed_url=other_host).status_code == 403
    wrong_token = RequestValidator("not-the-token").compute_signature(PUBLIC + path, form)
    assert hook.post(path, form, signature=wrong_token).status_code == 403
    # Validly signed but not a status callback, or too big: 4xx, nothing stored.
    assert hook.post(path, {"Foo": "bar"}).status_code == 400
    assert hook.post(path, status_form("sent", MessageSid="nope")).status_code == 400
    assert hook.post(path, status_form("sent", Body="x" * 9_000)).status_code == 413
    assert stored(hook.engine) == 0 and delivery_of(hook.engine, hook.message_id) is None


@pytest.mark.parametrize(
    "body", ["STOP", "stop", " Unsubscribe. ", "STOPALL", "cancel", "End", "QUIT"]
)
def test_stop_words_suppress_sms_and_start_lifts_it(hook: Hook, body: str) -> None:
    path = "/webhooks/twilio/inbound"
    form = {
        "MessageSid": "SM" + "b2" * 16,
        "From": "+46701234567",
        "To": "+15005550006",
        "Body": body,
    }
    response = hook.post(path, form)
    assert response.status_code == 200 and "<Response>" in response.text
    assert suppressions(hook.engine) == {(hook.anna, "sms", "stop")}
    assert hook.post(path, form).status_code == 200  # replayed: still one event
    assert stored(hook.engine) == 1
    start = dict(form, MessageSid="SM" + "c3" * 16, Body="start")
    assert hook.post(path, start).status_code == 200
    assert suppressions(hook.engine) == set()


def test_help_and_chat_are_recorded_without_suppressing(hook: Hook) -> None:
    path = "/webhooks/twilio/inbound"
    for i, body in enumerate(["HELP", "info", "stop sending me these please", "YES!"]):
        form = {"MessageSid": f"SM{i:032x}", "From": "+46701234567", "Body": body}
        assert hook.post(path, form).status_code == 200
    assert suppressions(hook.engine) == set()
    assert stored(hook.engine) == 4


def test_start_does_not_lift_an_email_unsubscribe_or_a_bounce(hook: Hook) -> None:
    path = "/webhooks/twilio/status"
    hook.post(path, status_form("failed", ErrorCode="30006"))  # a landline: not reachable by SMS
    inbound = {"MessageSid": "SM" + "d4" * 16, "From": "+46701234567", "Body": "START"}
    assert hook.post("/webhooks/twilio/inbound", inbound).status_code == 200
    assert suppressions(hook.engine) == {(hook.anna, "sms", "invalid_number")}


def test_keywords() -> None:
    assert keyword("Stop!") == "stop" and keyword("unstop") == "start"
    assert keyword("Please STOP") is None  # the whole message must be the keyword
    assert keyword("whatever", opt_out_type="STOP") == "stop"  # Twilio's own classification


# twilio-python's published request-validator example (tests/unit/test_request_validator.py).
def test_twilios_published_example() -> None:
    uri = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    assert verify_twilio("12345", uri, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not verify_twilio(
        "12345", uri, dict(params, Digits="4321"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert not verify_twilio(
        "12345", uri.replace("foo=1", "foo=2"), params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert not verify_twilio("12345", uri, params, None)


# --- the unsubscribe link -------------------------------------------------------------------------


def test_one_click_unsubscribe_needs_a_signed_token(hook: Hook, engine: Engine) -> None:
    email = add_sent_message(engine, hook.anna, "cus_anna", "email", "sg-1")
    links = build_links("cus_anna", message_ref("dunning:cus_anna:email_sms:0"), hook.base)
    path = links.unsubscribe_url.removeprefix(hook.base)
    # A GET (a mail scanner following the link) asks, but changes nothing.
    page = httpx.get(links.unsubscribe_url)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert suppressions(engine) == set()
    # Forged: the old unsigned token, a token of another customer, of another action.
    forged = [
        "/unsubscribe/cus_anna/0123456789ab",
        f"/unsubscribe/cus_anna/{sign('unsubscribe', 'cus_bo', message_ref('x'))}",
        f"/unsubscribe/cus_anna/{sign('pay', 'cus_anna', message_ref('x'))}",
    ]
    for bad in forged:
        assert (
            httpx.post(hook.base + bad, data={"List-Unsubscribe": "One-Click"}).status_code == 403
        )
    assert suppressions(engine) == set()
    # RFC 8058 one-click: a POST with List-Unsubscribe=One-Click.
    for _ in range(2):
        done = httpx.post(hook.base + path, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
    assert suppressions(engine) == {(hook.anna, "email", "unsubscribe")}
    with engine.connect() as conn:
        events = conn.execute(select(DeliveryEvent.message_id, DeliveryEvent.event)).all()
    assert events == [(email, "unsubscribe")]  # once, attributed to the email that carried it


def test_settings_never_show_secrets() -> None:
    settings = WebhookSettings.from_env(
        {
            "RETAIN_TWILIO_AUTH_TOKEN": "tok-secret",
            "RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY": "pk-secret",
        }
    )
    assert settings.twilio_auth_token == "tok-secret"
    text = repr(settings) + str(settings.describe())
    assert "tok-secret" not in text and "pk-secret" not in text
    with pytest.raises(ValueError, match="RETAIN_WEBHOOK_MAX_BODY"):
        WebhookSettings.from_env({"RETAIN_WEBHOOK_MAX_BODY": "lots"})
