"""Stripe webhooks on a minimal Starlette app: signatures checked on the raw body with a known
secret (valid, tampered, stale), events stored once, applied by their own time."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from models.bulk import table
from models.customer_data import Invoice, PaymentMethod, Subscription
from models.imports.mapping import load_mapping
from models.imports.run import import_file
from models.imports.stripe_webhook import stripe_webhook_route
from models.imports.tables import StripeEvent
from tests import stripe_exports as sx
from tests import stripe_fixtures as sf

SECRET = "whsec_test_4eC39HqLyjWDarjtT1zdp7dc"


def sign(payload: bytes, at: int | None = None, secret: str = SECRET) -> str:
    """Stripe's scheme, computed independently of the SDK: HMAC-SHA256 of "<t>.<body>"."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


@pytest.fixture(params=["own-app", "retain-webhooks-app"])
def client(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[httpx.Client]:
    """The route on its own, and mounted in the app `retain webhooks serve` runs."""
    folder = tmp_path / "export"
    folder.mkdir()
    for name, columns, rows in [
        ("stripe-customers", sx.CUSTOMER_COLUMNS, sx.customers()),
        ("stripe-subscriptions", sx.SUBSCRIPTION_COLUMNS, sx.subscriptions()),
        ("stripe-invoices", sx.INVOICE_COLUMNS, sx.invoices()),
        ("stripe-payment-methods", sx.PAYMENT_METHOD_COLUMNS, sx.payment_methods()),
    ]:
        path = sx.write_csv(folder / f"{name}.csv", columns, rows)
        assert import_file(engine, path, load_mapping(name)).rejects == []
    route = stripe_webhook_route(lambda: engine, secret=SECRET)
    if request.param == "own-app":
        app: Any = Starlette(routes=[route])
    else:
        from messaging.webhooks import WebhookSettings, create_app

        monkeypatch.setenv("RETAIN_LINK_SECRET", "test-link-secret")
        app = create_app(engine, WebhookSettings(), routes=[route])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the webhook app did not start"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def post(
    client: httpx.Client,
    event: dict[str, Any],
    header: str | None = None,
    body: bytes | None = None,
) -> Any:
    payload = body if body is not None else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = header if header is not None else sign(payload)
    return client.post("/webhooks/stripe", content=payload, headers=headers)


def rows(engine: Engine, model: Any) -> dict[str, Any]:
    with engine.connect() as connection:
        return {r.external_id: r for r in connection.execute(select(table(model))).all()}


def stored_events(engine: Engine) -> list[tuple[str, str]]:
    events = table(StripeEvent)
    with engine.connect() as connection:
        return [
            (r.event_id, r.outcome)
            for r in connection.execute(select(events).order_by(events.c.id)).all()
        ]


def dump(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return [
            sorted(tuple(r) for r in connection.execute(text(f"SELECT * FROM {name}")).all())
            for name in (
                "customers",
                "subscriptions",
                "invoices",
                "payment_methods",
                "stripe_events",
            )
        ]


def failed_invoice(created: int, attempts: int = 3) -> dict[str, Any]:
    obj = sf.invoice(1, sx.T0 - 3 * sx.DAY, status="open", attempts=attempts)
    obj["id"], obj["customer"] = "in_0001", "cus_0001"
    obj["parent"]["subscription_details"]["subscription"] = "sub_0001"
    return sf.event(f"evt_failed_{created}", "invoice.payment_failed", created, obj)


def paid_invoice(created: int) -> dict[str, Any]:
    event = failed_invoice(created, attempts=4)
    obj = event["data"]["object"]
    obj["status"], obj["status_transitions"] = "paid", {"paid_at": created}
    return {**event, "id": f"evt_paid_{created}", "type": "invoice.paid"}


def test_valid_event_is_applied_and_stored_once(client: httpx.Client, engine: Engine) -> None:
    now = int(time.time())
    event = failed_invoice(now - 60)
    response = post(client, event)
    assert response.status_code == 200 and response.json()["outcome"] == "applied: in_0001 updated"
    invoice = rows(engine, Invoice)["in_0001"]
    assert (invoice.status, invoice.attempts) == ("failed", 3)
    assert invoice.source_updated_at == datetime.fromtimestamp(now - 60, UTC)

    again = post(client, event)  # Stripe delivers some events twice
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate: already received"
    assert stored_events(engine) == [(event["id"], "applied: in_0001 updated")]


def test_tampered_stale_and_unsigned_requests_get_400_and_change_nothing(
    client: httpx.Client, engine: Engine
) -> None:
    event = failed_invoice(int(time.time()))
    payload = json.dumps(event).encode()
    before = dump(engine)
    tampered = payload.replace(b'"attempt_count": 3', b'"attempt_count": 9')
    assert tampered != payload
    stale = int(time.time()) - 301
    cases = {
        "tampered": post(client, event, header=sign(payload), body=tampered),
        "stale": post(client, event, header=sign(payload, at=stale)),
        "other secret": post(client, event, header=sign(payload, secret="whsec_other")),
        "no signature": post(client, event, header=""),
        "garbage": post(client, event, header="t=abc,v1=zz"),
    }
    assert {name: r.status_code for name, r in cases.items()} == dict.fromkeys(cases, 400)
    assert "timestamp" in cases["stale"].json()["error"].lower()
    assert dump(engine) == before

    # A replay of a once-valid delivery minutes later is stale too.
    old = int(time.time()) - 600
    replay = failed_invoice(old)
    body = json.dumps(replay).encode()
    assert post(client, replay, header=sign(body, at=old), body=body).status_code == 400
    assert dump(engine) == before


def test_events_out_of_order_end_in_the_newest_state(client: httpx.Client, engine: Engine) -> None:
    now = int(time.time())
    assert post(client, paid_invoice(now - 100)).json()["outcome"] == "applied: in_0001 updated"
    late = post(client, failed_invoice(now - 200))  # older, delivered later
    assert late.json()["outcome"] == "unchanged: in_0001 already has this or a newer state"
    invoice = rows(engine, Invoice)["in_0001"]
    assert (invoice.status, invoice.attempts) == ("paid", 4)
    assert invoice.paid_at == datetime.fromtimestamp(now - 100, UTC)


def test_subscription_card_and_other_events(client: httpx.Client, engine: Engine) -> None:
    now = int(time.time())
    paused = sf.subscription(0, sx.T0, status="paused")
    paused["id"], paused["customer"] = "sub_0000", "cus_0000"
    assert (
        post(
            client, sf.event("evt_p", "customer.subscription.paused", now - 50, paused)
        ).status_code
        == 200
    )
    deleted = sf.subscription(1, sx.T0, status="canceled")
    deleted["id"], deleted["customer"], deleted["canceled_at"] = "sub_0001", "cus_0001", now - 40
    assert (
        post(
            client, sf.event("evt_d", "customer.subscription.deleted", now - 40, deleted)
        ).status_code
        == 200
    )
    expiring = {
        "id": "card_1Abc",
        "object": "card",
        "customer": "cus_0002",
        "brand": "Visa",
        "last4": "0341",
        "exp_month": 12,
        "exp_year": 2026,
    }
    assert (
        post(client, sf.event("evt_e", "customer.source.expiring", now - 30, expiring)).status_code
        == 200
    )
    renewed = sf.card(3, sx.T0, exp_year=2030)
    renewed["id"], renewed["customer"] = "pm_0003", "cus_0003"
    assert (
        post(
            client, sf.event("evt_u", "payment_method.automatically_updated", now - 20, renewed)
        ).status_code
        == 200
    )
    upcoming = {
        "object": "invoice",
        "customer": "cus_0004",
        "subscription": "sub_0004",
        "amount_due": 4900,
        "currency": "usd",
        "next_payment_attempt": now + 3 * 86_400,
    }
    assert (
        post(client, sf.event("evt_n", "invoice.upcoming", now - 10, upcoming)).status_code == 200
    )
    stranger = sf.subscription(9, sx.T0)
    assert (
        post(client, sf.event("evt_s", "customer.subscription.updated", now, stranger)).status_code
        == 200
    )
    ignored = post(client, sf.event("evt_x", "charge.refunded", now, {"id": "ch_1"}))
    assert ignored.json()["outcome"] == "ignored: not an event Retain uses"

    subs = rows(engine, Subscription)
    assert (subs["sub_0000"].status, subs["sub_0000"].paused_at) == (
        "paused",
        datetime.fromtimestamp(now - 50, UTC),
    )
    assert (subs["sub_0001"].status, subs["sub_0001"].canceled_at) == (
        "canceled",
        datetime.fromtimestamp(now - 40, UTC),
    )
    cards = rows(engine, PaymentMethod)
    assert (cards["card_1Abc"].brand, cards["card_1Abc"].expires_on.isoformat()) == (
        "visa",
        "2026-12-31",
    )
    assert cards["pm_0003"].exp_year == 2030
    outcomes = dict(stored_events(engine))
    assert outcomes["evt_n"].startswith("applied: sub_0004 renews ")
    assert subs["sub_0004"].upcoming_invoice_cents == 4900
    assert outcomes["evt_s"].startswith("rejected: customer 'cus_9'")
    assert "sub_9" not in subs and len(outcomes) == 7


def test_a_failed_payment_puts_the_customer_in_a_dunning_segment_at_once(
    client: httpx.Client, engine: Engine
) -> None:
    from experiments.rules import parse_rule
    from models.segments import select_segment

    rule = parse_rule('failed_invoices > 0 and subscription.status in ["active", "past_due"]')
    as_of = datetime.now(UTC)
    customer_id = rows(engine, Invoice)["in_0000"].customer_id
    assert customer_id not in select_segment(engine, rule, as_of)  # its invoice was paid
    event = failed_invoice(int(time.time()))
    obj = event["data"]["object"]
    obj["id"], obj["customer"] = "in_0000", "cus_0000"
    obj["parent"]["subscription_details"]["subscription"] = "sub_0000"
    assert post(client, {**event, "id": "evt_fail_0"}).status_code == 200
    assert customer_id in select_segment(engine, rule, datetime.now(UTC))
    paid = paid_invoice(int(time.time()) + 1)
    paid["data"]["object"].update({"id": "in_0000", "customer": "cus_0000"})
    paid["data"]["object"]["parent"]["subscription_details"]["subscription"] = "sub_0000"
    assert post(client, {**paid, "id": "evt_paid_0"}).status_code == 200
    # paid a second from now (the event's time): until then the invoice is still owed as of now
    paid_at = datetime.now(UTC) + timedelta(seconds=2)
    assert customer_id not in select_segment(engine, rule, paid_at)


def test_an_upcoming_invoice_flags_a_card_that_expires_before_the_charge(
    client: httpx.Client, engine: Engine
) -> None:
    """``invoice.upcoming`` records the announced charge on the subscription; a pre-dunning
    segment selects the customers whose card will have expired by then."""
    from experiments.rules import parse_rule
    from models.segments import select_segment

    rule = parse_rule('card_expires_before_next_charge and subscription.status == "active"')
    as_of = datetime(2026, 10, 1, tzinfo=UTC)  # card pm_0004 expires 2026-10-31
    customer_id = rows(engine, Subscription)["sub_0004"].customer_id
    assert customer_id not in select_segment(engine, rule, as_of)

    def announce(event_id: str, created: int, charge: datetime, amount: int, currency: str) -> str:
        obj = {
            "object": "invoice",
            "customer": "cus_0004",
            "currency": currency,
            "amount_due": amount,
            "next_payment_attempt": int(charge.timestamp()),
            "parent": {"subscription_details": {"subscription": "sub_0004"}},
        }
        answer = post(client, sf.event(event_id, "invoice.upcoming", created, obj))
        assert answer.status_code == 200
        return str(answer.json()["outcome"])

    now = int(time.time())
    before_expiry, after_expiry = (
        datetime(2026, 10, 29, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    assert announce("evt_up1", now - 30, before_expiry, 4_900, "jpy") == (
        "applied: sub_0004 renews 2026-10-29 00:00 UTC for 4900"
    )
    assert customer_id not in select_segment(engine, rule, as_of)
    # Stripe counts ISK in hundredths; Retain in whole krónur.
    assert announce("evt_up2", now - 20, after_expiry, 590_000, "isk").startswith("applied")
    assert customer_id in select_segment(engine, rule, as_of)
    # An older announcement delivered late changes nothing.
    assert announce("evt_up0", now - 40, before_expiry, 4_900, "jpy") == (
        "unchanged: sub_0004 already has this or a later upcoming invoice"
    )
    sub = rows(engine, Subscription)["sub_0004"]
    assert (sub.upcoming_invoice_at, sub.upcoming_invoice_cents) == (after_expiry, 5_900)
    assert customer_id in select_segment(engine, rule, as_of)
    unknown = sf.event(
        "evt_up9",
        "invoice.upcoming",
        now,
        {"object": "invoice", "subscription": "sub_9", "amount_due": 1, "period_end": now},
    )
    assert post(client, unknown).json()["outcome"] == "ignored: no subscription sub_9 in Retain yet"
