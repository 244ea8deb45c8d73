"""SendGrid's signed Event Webhook, through the real app over HTTP, asserted on the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from messaging.webhooks import WebhookSettings, create_app
from messaging.webhooks.verify import verify_sendgrid
from models.delivery import MessageDelivery, delivery_of
from models.records import DeliveryEvent, Suppression
from tests.webhook_support import T0, SendGridSigner, add_customer, add_sent_message, serve

NOW = int(T0.timestamp())
URL = "/webhooks/sendgrid/events"


@dataclass
class Hook:
    base: str
    signer: SendGridSigner
    engine: Engine
    message_id: int
    anna: int
    bo: int

    def post(
        self, body: bytes, timestamp: int = NOW, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = headers if headers is not None else self.signer.headers(body, timestamp)
        return httpx.post(self.base + URL, content=body, headers=sent, timeout=10)


@pytest.fixture
def hook(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "test-link-secret")
    signer = SendGridSigner()
    anna = add_customer(engine, "cus_anna", "anna@example.com", "+46701234567")
    bo = add_customer(engine, "cus_bo", "bo@example.com", None)
    message_id = add_sent_message(engine, anna, "cus_anna", "email", "sgmsg123")
    settings = WebhookSettings(sendgrid_public_key=signer.public_key, max_body=64_000)
    app = create_app(engine, settings, clock=lambda: NOW + 30.0)
    with serve(app) as base:
        yield Hook(base, signer, engine, message_id, anna, bo)


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def suppressions(engine: Engine) -> set[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Suppression.customer_id, Suppression.channel, Suppression.reason)
        )
        return {(int(c), ch, r) for c, ch, r in rows}


def event(name: str, n: int, **extra: object) -> dict[str, object]:
    return {"event": name, "timestamp": NOW + n, "sg_event_id": f"ev-{name}-{n}", **extra}


def batch(hook: Hook) -> bytes:
    ours = {"email": "anna@example.com", "retain_message_id": str(hook.message_id)}
    events = [
        event("processed", 1, **ours),
        event("delivered", 2, sg_message_id="sgmsg123.filterdrecv-1", email="anna@example.com"),
        event("open", 3, **ours),
        event("click", 4, url="https://app.example.com/pay/x", **ours),
        event("delivered", 5, **ours),  # a late duplicate delivery: must not move the state back
        event("bounce", 6, email="bo@example.com", type="bounce", reason="550 no such user"),
        event("unsubscribe", 7, **ours),
        event("deferred", 8, email="nobody@example.com"),  # not ours: stored, unmatched
    ]
    return json.dumps(events).encode()


def test_a_signed_batch_is_stored_once_and_moves_state_and_suppressions(hook: Hook) -> None:
    body = batch(hook)
    response = hook.post(body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "stored": 8,
        "duplicates": 0,
        "suppressed": 2,
        "lifted": 0,
        "unmatched": 1,
    }
    state = delivery_of(hook.engine, hook.message_id)
    assert state is not None
    assert (state.status, state.provider_status) == ("clicked", "click")
    assert state.delivered_at is not None and state.delivered_at.timestamp() == NOW + 2
    assert state.opened_at is not None and state.clicked_at is not None
    assert suppressions(hook.engine) == {
        (hook.anna, "email", "unsubscribe"),
        (hook.bo, "email", "bounce"),
    }
    with hook.engine.connect() as conn:
        ids = set(conn.execute(select(DeliveryEvent.provider_event_id)).scalars())
        linked = conn.execute(
            select(func.count()).where(DeliveryEvent.message_id == hook.message_id)
        ).scalar_one()
    assert "ev-click-4" in ids and linked == 6

    # SendGrid delivers again (a retry): every event is a duplicate and nothing changes.
    again = hook.post(body, timestamp=NOW + 10)
    assert again.status_code == 200
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 8
    assert count(hook.engine, DeliveryEvent) == 8 and len(suppressions(hook.engine)) == 2


def test_bounce_types_dropped_reasons_spam_and_group_unsubscribe(hook: Hook) -> None:
    body = json.dumps(
        [
            event("bounce", 1, email="anna@example.com", type="blocked"),  # soft: no suppression
            event("dropped", 2, email="bo@example.com", reason="Spam Reporting Address"),
            event("spamreport", 3, email="bo@example.com"),  # already suppressed: one row
            event("group_unsubscribe", 4, email="anna@example.com", asm_group_id=7),
        ]
    ).encode()
    assert hook.post(body).status_code == 200
    assert suppressions(hook.engine) == {
        (hook.bo, "email", "spamreport"),
        (hook.anna, "email", "unsubscribe"),
    }


def test_bad_missing_tampered_or_foreign_signatures_get_403_and_change_nothing(hook: Hook) -> None:
    body = batch(hook)
    good = hook.signer.headers(body, NOW)
    tampered = body.replace(b"bo@example.com", b"bob@example.com")
    assert hook.post(tampered, headers=good).status_code == 403
    assert hook.post(body, headers={"Content-Type": "application/json"}).status_code == 403
    foreign = SendGridSigner().headers(body, NOW)
    assert hook.post(body, headers=foreign).status_code == 403
    wrong_time = dict(good, **{"X-Twilio-Email-Event-Webhook-Timestamp": str(NOW + 1)})
    assert hook.post(body, headers=wrong_time).status_code == 403
    garbage = dict(good, **{"X-Twilio-Email-Event-Webhook-Signature": "not base64!"})
    assert hook.post(body, headers=garbage).status_code == 403
    assert count(hook.engine, DeliveryEvent) == 0 and not suppressions(hook.engine)


def test_a_replayed_request_outside_the_window_is_refused(hook: Hook) -> None:
    body = batch(hook)
    # Correctly signed, but 10 minutes old (the window is 5): a captured request replayed later.
    assert hook.post(body, timestamp=NOW - 600).status_code == 403
    assert hook.post(body, timestamp=NOW + 900).status_code == 403  # or from the future
    assert count(hook.engine, DeliveryEvent) == 0
    assert hook.post(body, timestamp=NOW - 200).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json at all", 400),
        (b'{"event": "delivered", "timestamp": 1}', 400),  # an object, not a batch
        (b'[{"event": "delivered"}]', 400),  # no timestamp
        (b'[{"event": "delivered", "timestamp": "soon"}]', 400),
        (b'[{"event": "open", "timestamp": 1}, 7]', 400),  # one bad element rejects the batch
        (b"\xff\xfe", 403),  # not UTF-8: cannot even be what was signed as text
    ],
)
def test_malformed_bodies_are_rejected_whole(hook: Hook, body: bytes, status: int) -> None:
    assert hook.post(body).status_code == status
    assert count(hook.engine, DeliveryEvent) == 0 and count(hook.engine, MessageDelivery) == 0


def test_oversized_bodies_get_413_before_anything_is_read(hook: Hook) -> None:
    big = json.dumps([event("open", i, email="anna@example.com") for i in range(2_000)]).encode()
    assert len(big) > 64_000
    assert hook.post(big).status_code == 413
    # Without a Content-Length (chunked), the limit holds while streaming.
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    response = httpx.post(
        hook.base + URL, content=chunks, headers=hook.signer.headers(big, NOW), timeout=10
    )
    assert response.status_code == 413
    assert count(hook.engine, DeliveryEvent) == 0


def test_without_a_verification_key_the_endpoint_accepts_nothing(engine: Engine) -> None:
    app = create_app(engine, WebhookSettings(), clock=lambda: NOW)
    body = b"[]"
    with serve(app) as base:
        response = httpx.post(base + URL, content=body, headers=SendGridSigner().headers(body, NOW))
    assert response.status_code == 503


# SendGrid's own published example (sendgrid-python, test/unit/test_eventwebhook.py).
SG_PUBLIC_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
SG_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
)


def test_sendgrids_published_example_verifies_and_is_applied(engine: Engine) -> None:
    stamp = int(SG_TIMESTAMP)
    payload = SG_PAYLOAD.encode()
    assert verify_sendgrid(SG_PUBLIC_KEY, payload, SG_SIGNATURE, SG_TIMESTAMP, stamp + 1, 300)
    assert not verify_sendgrid(SG_PUBLIC_KEY, payload, SG_SIGNATURE, SG_TIMESTAMP, stamp + 301, 300)
    assert not verify_sendgrid(SG_PUBLIC_KEY, payload[:-2], SG_SIGNATURE, SG_TIMESTAMP, stamp, 300)
    customer = add_customer(engine, "cus_hello", "hello@world.com", None)
    app = create_app(
        engine, WebhookSettings(sendgrid_public_key=SG_PUBLIC_KEY), clock=lambda: stamp + 5.0
    )
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": SG_SIGNATURE,
        "X-Twilio-Email-Event-Webhook-Timestamp": SG_TIMESTAMP,
    }
    with serve(app) as base:
        response = httpx.post(base + URL, content=payload, headers=headers)
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert suppressions(engine) == {(customer, "email", "bounce")}
