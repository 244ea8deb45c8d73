"""The SendGrid and Twilio channels: the official clients against the local fake providers, with
assertions on the exact requests and on how every kind of answer is translated."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from messaging.channels import ChannelError, OutgoingMessage, SendRecord, body_digest
from messaging.render import RenderedMessage
from messaging.sendgrid_channel import SendGridChannel
from messaging.twilio_channel import TwilioChannel
from tests.providers import (
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    Answer,
    FakeProviders,
    rate_limited,
    sendgrid_error,
    twilio_error,
)

NOW = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
UNSUBSCRIBE = "https://app.example.com/unsubscribe/cus_1/abc123"


@pytest.fixture
def fake() -> Iterator[FakeProviders]:
    with FakeProviders() as server:
        yield server


def email(message_id: int = 41, html: str | None = "<p>Hi &amp; bye</p>\n") -> OutgoingMessage:
    return OutgoingMessage(
        idempotency_key=f"card-expiry:cus_1:email:{message_id}",
        channel="email",
        to="anna@example.com",
        rendered=RenderedMessage("email", "Your card expires", "Hi Anna\n", html, None),
        customer_id=1,
        experiment_key="card-expiry",
        arm="email",
        message_id=message_id,
        unsubscribe_url=UNSUBSCRIBE,
    )


def sms(message_id: int = 42, to: str = "+46701234567") -> OutgoingMessage:
    return OutgoingMessage(
        idempotency_key=f"card-expiry:cus_1:email_sms:{message_id}",
        channel="sms",
        to=to,
        rendered=RenderedMessage(
            "sms", None, "Your card expires soon: https://x.test/p/1", None, 1
        ),
        customer_id=1,
        experiment_key="card-expiry",
        arm="email_sms",
        message_id=message_id,
    )


def sendgrid(fake: FakeProviders, **options: object) -> SendGridChannel:
    settings: dict[str, object] = {
        "from_email": "hello@retain.example",
        "from_name": "Retain",
        "reply_to": "support@retain.example",
        "base_url": fake.url,
        "timeout": 2.0,
    }
    settings.update(options)
    return SendGridChannel(SENDGRID_KEY, **settings)  # type: ignore[arg-type]


def twilio(fake: FakeProviders, **options: object) -> TwilioChannel:
    settings: dict[str, object] = {
        "messaging_service_sid": "MG" + "1" * 32,
        "base_url": fake.url,
        "status_callback_base_url": "https://hooks.retain.example/twilio/status",
        "timeout": 2.0,
    }
    settings.update(options)
    return TwilioChannel(TWILIO_SID, TWILIO_TOKEN, **settings)  # type: ignore[arg-type]


# --- SendGrid ------------------------------------------------------------------------------------


def test_sendgrid_sends_the_exact_v3_request(fake: FakeProviders) -> None:
    receipt = sendgrid(fake, asm_group_id=77).send(email())
    [request] = fake.sends("sendgrid")
    assert request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "personalizations": [{"to": [{"email": "anna@example.com"}]}],
        "from": {"email": "hello@retain.example", "name": "Retain"},
        "reply_to": {"email": "support@retain.example"},
        "subject": "Your card expires",
        "content": [
            {"type": "text/plain", "value": "Hi Anna\n"},
            {"type": "text/html", "value": "<p>Hi &amp; bye</p>\n"},
        ],
        "custom_args": {"retain_message_id": "41", "retain_key": "card-expiry:cus_1:email:41"},
        "categories": ["retain:card-expiry", "retain:card-expiry:email"],
        "headers": {
            "List-Unsubscribe": f"<{UNSUBSCRIBE}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "asm": {"group_id": 77},
    }
    assert receipt.provider == "sendgrid"
    assert receipt.provider_message_id == fake.accepted["sendgrid"][0]["id"]


def test_sendgrid_sandbox_mode_and_text_only(fake: FakeProviders) -> None:
    sendgrid(fake, sandbox=True, reply_to=None, from_name=None).send(email(html=None))
    body = fake.sends("sendgrid")[0].json()
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert body["content"] == [{"type": "text/plain", "value": "Hi Anna\n"}]
    assert body["from"] == {"email": "hello@retain.example"}
    assert "reply_to" not in body and "asm" not in body


@pytest.mark.parametrize(
    ("answer", "permanent", "fatal", "code"),
    [
        (
            sendgrid_error(
                400, "The to email does not contain a valid address.", "personalizations.0.to"
            ),
            True,
            False,
            "400",
        ),
        (sendgrid_error(413, "payload too large"), True, False, "413"),
        (sendgrid_error(401, "The provided authorization grant is invalid"), False, True, "401"),
        (sendgrid_error(500, "internal error"), False, False, "500"),
        (sendgrid_error(503, "unavailable"), False, False, "503"),
        (sendgrid_error(502, "bad gateway"), False, False, "502"),
    ],
)
def test_sendgrid_errors_are_translated(
    fake: FakeProviders, answer: Answer, permanent: bool, fatal: bool, code: str
) -> None:
    fake.plan("sendgrid", answer)
    with pytest.raises(ChannelError) as raised:
        sendgrid(fake).send(email())
    error = raised.value
    assert (error.permanent, error.fatal, error.code, error.unknown_outcome) == (
        permanent,
        fatal,
        code,
        False,
    )
    assert "card-expiry:cus_1:email:41" in str(error)
    if answer.status == 400:
        assert "personalizations.0.to" in str(error) and "not contain a valid" in str(error)
    assert fake.accepted["sendgrid"] == []


def test_sendgrid_429_reads_the_rate_limit_reset(fake: FakeProviders) -> None:
    fake.plan("sendgrid", rate_limited("sendgrid", 30))
    with pytest.raises(ChannelError) as raised:
        sendgrid(fake).send(email())
    assert not raised.value.permanent
    assert raised.value.retry_after is not None and 25 <= raised.value.retry_after <= 31


def test_sendgrid_timeout_after_acceptance_is_an_unknown_outcome_then_found(
    fake: FakeProviders,
) -> None:
    channel = sendgrid(fake, timeout=0.3)
    fake.plan("sendgrid", Answer(202, accept=True, delay=1.0))
    with pytest.raises(ChannelError) as raised:
        channel.send(email())
    assert raised.value.unknown_outcome and not raised.value.permanent
    record = SendRecord(41, "k", "email", "card-expiry", "anna@example.com", "x", NOW)
    found = channel.find_sent(record)
    assert found is not None and found.provider_message_id == fake.accepted["sendgrid"][0]["id"]
    lookup = [r for r in fake.requests if r.path == "/v3/messages"][-1]
    assert lookup.query == {"query": ["unique_args['retain_message_id']=\"41\""], "limit": ["10"]}
    missing = SendRecord(99, "k", "email", "card-expiry", "anna@example.com", "x", NOW)
    assert channel.find_sent(missing) is None


def test_sendgrid_malformed_answer_is_a_clear_unknown_outcome(fake: FakeProviders) -> None:
    fake.plan("sendgrid", Answer(202, accept=True))  # no X-Message-Id
    with pytest.raises(ChannelError, match=r"without an X-Message-Id.*malformed") as raised:
        sendgrid(fake).send(email())
    assert raised.value.unknown_outcome


def test_sendgrid_connection_refused_is_transient() -> None:
    channel = SendGridChannel(SENDGRID_KEY, from_email="a@b.example", base_url="http://127.0.0.1:9")
    with pytest.raises(ChannelError, match="cannot reach SendGrid") as raised:
        channel.send(email())
    assert not raised.value.permanent and not raised.value.unknown_outcome


# --- Twilio --------------------------------------------------------------------------------------


def test_twilio_sends_the_exact_form_request(fake: FakeProviders) -> None:
    receipt = twilio(fake).send(sms())
    [request] = fake.sends("twilio")
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    auth = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {auth}"
    assert request.form() == {
        "To": ["+46701234567"],
        "Body": ["Your card expires soon: https://x.test/p/1"],
        "MessagingServiceSid": ["MG" + "1" * 32],
        "StatusCallback": ["https://hooks.retain.example/twilio/status?retain_message_id=42"],
    }
    assert receipt.provider == "twilio"
    assert receipt.provider_message_id == fake.accepted["twilio"][0]["id"]
    assert receipt.provider_message_id.startswith("SM")


def test_twilio_from_number_and_no_callback(fake: FakeProviders) -> None:
    channel = twilio(
        fake, messaging_service_sid=None, from_number="+15005550006", status_callback_base_url=None
    )
    channel.send(sms())
    form = fake.sends("twilio")[0].form()
    assert form["From"] == ["+15005550006"]
    assert "MessagingServiceSid" not in form and "StatusCallback" not in form


@pytest.mark.parametrize(
    ("answer", "permanent", "fatal", "code", "suppress"),
    [
        (
            twilio_error(400, 21211, "The 'To' number +4670 is not a valid phone number."),
            True,
            False,
            "21211",
            None,
        ),
        (
            twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"),
            True,
            False,
            "21610",
            "sms_stop",
        ),
        (twilio_error(401, 20003, "Authenticate"), False, True, "20003", None),
        (twilio_error(500, 20500, "Internal Server Error"), False, False, "20500", None),
        (twilio_error(503, 20503, "Service Unavailable"), False, False, "20503", None),
    ],
)
def test_twilio_errors_are_translated(
    fake: FakeProviders,
    answer: Answer,
    permanent: bool,
    fatal: bool,
    code: str,
    suppress: str | None,
) -> None:
    fake.plan("twilio", answer)
    with pytest.raises(ChannelError) as raised:
        twilio(fake).send(sms())
    error = raised.value
    assert (error.permanent, error.fatal, error.code, error.suppress) == (
        permanent,
        fatal,
        code,
        suppress,
    )
    assert "card-expiry:cus_1:email_sms:42" in str(error)


def test_twilio_rfc9457_errors_are_caught_through_the_base_class(fake: FakeProviders) -> None:
    body = b'{"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid To", "status": 400, "code": 21211, "detail": "bad number"}'
    fake.plan("twilio", Answer(400, body, (("Content-Type", "application/problem+json"),)))
    with pytest.raises(ChannelError, match="Invalid To: bad number") as raised:
        twilio(fake).send(sms())
    assert raised.value.permanent and raised.value.code == "21211"


def test_twilio_429_honours_retry_after(fake: FakeProviders) -> None:
    fake.plan("twilio", rate_limited("twilio", 7))
    with pytest.raises(ChannelError) as raised:
        twilio(fake).send(sms())
    assert (raised.value.permanent, raised.value.retry_after, raised.value.code) == (
        False,
        7.0,
        "20429",
    )


def test_twilio_malformed_answer_and_timeout_are_unknown_outcomes(fake: FakeProviders) -> None:
    channel = twilio(fake, timeout=0.3)
    fake.plan("twilio", Answer(201, accept=True, malformed=True))
    with pytest.raises(ChannelError, match="malformed body") as raised:
        channel.send(sms(1))
    assert raised.value.unknown_outcome
    fake.plan("twilio", Answer(201, accept=True, delay=1.0))
    with pytest.raises(ChannelError, match="did not answer") as raised:
        channel.send(sms(2))
    assert raised.value.unknown_outcome
    assert len(fake.accepted["twilio"]) == 2


def test_twilio_reconciliation_matches_number_and_body(fake: FakeProviders) -> None:
    channel = twilio(fake)
    sent = channel.send(sms(7))
    text = sms(7).rendered.text
    record = SendRecord(7, "k", "sms", "card-expiry", "+46701234567", body_digest(text), NOW)
    found = channel.find_sent(record)
    assert found is not None and found.provider_message_id == sent.provider_message_id
    lookup = [r for r in fake.requests if r.method == "GET"][-1]
    assert lookup.query["To"] == ["+46701234567"]
    other = SendRecord(8, "k", "sms", "card-expiry", "+46701234567", body_digest("other"), NOW)
    assert channel.find_sent(other) is None
    query = parse_qs(urlsplit(fake.sends("twilio")[0].form()["StatusCallback"][0]).query)
    assert query == {"retain_message_id": ["7"]}


def test_twilio_connection_refused_is_transient() -> None:
    channel = TwilioChannel(
        TWILIO_SID, TWILIO_TOKEN, from_number="+15005550006", base_url="http://127.0.0.1:9"
    )
    with pytest.raises(ChannelError, match="cannot reach Twilio") as raised:
        channel.send(sms())
    assert not raised.value.permanent and not raised.value.unknown_outcome
