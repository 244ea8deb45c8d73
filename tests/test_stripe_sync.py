"""``retain sync stripe`` through the official client against a local Stripe-like server: a first
sync over two pages, then an incremental one that asks only for what changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from flows.cli import app
from models.bulk import table
from models.customer_data import Customer, Invoice, PaymentMethod, Subscription
from models.imports import stripe_sync
from models.imports.settings import ImportSettings
from models.imports.stripe_api import StripeApiError
from models.imports.stripe_sync import EVENT_TYPES, read_cursors, sync_stripe
from tests import stripe_fixtures as sf
from tests.fake_stripe import FakeStripe, running

KEY = "rk_test_retain_read_only_51Hx"
T0, DAY = sf.T0, sf.DAY
FIRST = datetime.fromtimestamp(T0 + 10 * DAY, UTC)
SECOND = datetime.fromtimestamp(T0 + 20 * DAY, UTC)


def business(fake: FakeStripe, ids: range) -> None:
    for i in ids:
        created = T0 + i * 3600
        fake.add("customers", sf.customer(i, created))
        fake.add(
            "subscriptions", sf.subscription(i, created + 1, interval="year" if i == 2 else "month")
        )
        fake.add("invoices", sf.invoice(i, created + 2, status="paid"))
        fake.add("payment_methods", sf.card(i, created + 3))


def settings(fake: FakeStripe) -> ImportSettings:
    return ImportSettings(stripe_api_key=KEY, stripe_api_base=fake.base)


def state(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        return {
            name: {r.external_id: r for r in connection.execute(select(table(model))).all()}
            for name, model in [
                ("customers", Customer),
                ("subscriptions", Subscription),
                ("invoices", Invoice),
                ("payment_methods", PaymentMethod),
            ]
        }


def test_first_sync_pages_then_incremental_sync_reads_only_changes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe_sync, "CHUNK", 2)  # three customers: applied in two chunks
    fake = FakeStripe(KEY)
    business(fake, range(1, 4))
    with running(fake):
        first = sync_stripe(engine, settings(fake), now=FIRST, page_size=2)
        assert fake.requests == [
            ("GET", "/v1/customers", {"limit": "2"}),
            ("GET", "/v1/customers", {"limit": "2", "starting_after": "cus_2"}),
            ("GET", "/v1/subscriptions", {"limit": "2", "status": "all"}),
            (
                "GET",
                "/v1/subscriptions",
                {"limit": "2", "status": "all", "starting_after": "sub_2"},
            ),
            ("GET", "/v1/invoices", {"limit": "2"}),
            ("GET", "/v1/invoices", {"limit": "2", "starting_after": "in_2"}),
            ("GET", "/v1/customers/cus_3/payment_methods", {"limit": "2", "type": "card"}),
            ("GET", "/v1/customers/cus_2/payment_methods", {"limit": "2", "type": "card"}),
            ("GET", "/v1/customers/cus_1/payment_methods", {"limit": "2", "type": "card"}),
        ]
        assert set(fake.authorizations) == {f"Bearer {KEY}"}
        assert [(s.entity, s.inserted, s.rejected) for s in first.imports] == [
            ("customers", 3, 0),
            ("subscriptions", 3, 0),
            ("invoices", 3, 0),
            ("payment_methods", 3, 0),
        ]
        assert read_cursors(engine) == {
            "customers": T0 + 3 * 3600,
            "subscriptions": T0 + 3 * 3600 + 1,
            "invoices": T0 + 3 * 3600 + 2,
            "events": int(FIRST.timestamp()),
        }
        db = state(engine)
        assert [db["customers"][f"cus_{i}"].name for i in (1, 2, 3)] == [
            "山田 太郎",
            "Smith, John",
            "Дмитрий Иванов",
        ]
        assert (
            db["customers"]["cus_1"].phone is None
            and db["customers"]["cus_2"].phone == "+46701234567"
        )
        assert (db["customers"]["cus_1"].currency, db["customers"]["cus_2"].currency) == (
            "USD",
            "SEK",
        )
        assert (db["subscriptions"]["sub_1"].mrr_cents, db["subscriptions"]["sub_2"].mrr_cents) == (
            4900,
            4900,
        )
        assert db["subscriptions"]["sub_2"].billing_interval == "year"
        assert db["invoices"]["in_3"].subscription_id == db["subscriptions"]["sub_3"].id
        assert db["payment_methods"]["pm_1"].last4 == "4241"

        # What happens in Stripe between the syncs: a new customer, a cancellation, a failed
        # then recovered payment (events delivered newest first), an updated card.
        fake.requests.clear()
        business(fake, range(4, 5))
        after = int(FIRST.timestamp())
        canceled = sf.subscription(1, T0 + 3601, status="canceled")
        canceled["canceled_at"] = after + 100
        failed = sf.invoice(2, T0 + 7202, status="open", attempts=1)
        paid = sf.invoice(2, T0 + 7202, status="paid", attempts=2)
        updated_card = sf.card(3, T0 + 3 * 3600 + 3, exp_year=2031)
        fake.objects["payment_methods"] = [
            updated_card if pm["id"] == "pm_3" else pm for pm in fake.objects["payment_methods"]
        ]
        fake.add(
            "events", sf.event("evt_1", "customer.subscription.updated", after + 100, canceled)
        )
        fake.add("events", sf.event("evt_2", "invoice.payment_failed", after + 200, failed))
        fake.add("events", sf.event("evt_3", "invoice.paid", after + 300, paid))
        fake.add(
            "events",
            sf.event("evt_4", "payment_method.automatically_updated", after + 400, updated_card),
        )
        fake.add("events", sf.event("evt_0", "customer.subscription.updated", after - 50, canceled))
        # Cards of customers synced before: cus_1 adds a card and makes it its default; cus_2
        # removes its only card.
        added = fake.add("payment_methods", {**sf.card(1, after + 500), "id": "pm_1b"})
        fake.add("events", sf.event("evt_5", "payment_method.attached", after + 500, added))
        cus_1 = next(c for c in fake.objects["customers"] if c["id"] == "cus_1")
        cus_1["invoice_settings"] = {"default_payment_method": "pm_1b"}
        new_default = sf.event("evt_6", "customer.updated", after + 510, cus_1)
        new_default["data"]["previous_attributes"] = {"invoice_settings": {}}
        fake.add("events", new_default)
        removed = next(pm for pm in fake.objects["payment_methods"] if pm["id"] == "pm_2")
        fake.objects["payment_methods"].remove(removed)
        detached = sf.event(
            "evt_7", "payment_method.detached", after + 520, {**removed, "customer": None}
        )
        detached["data"]["previous_attributes"] = {"customer": "cus_2"}
        fake.add("events", detached)
        second = sync_stripe(engine, settings(fake), now=SECOND, page_size=2)
        types = {f"types[{i}]": kind for i, kind in enumerate(EVENT_TYPES)}
        events = {"limit": "2", "created[gt]": str(after), **types}
        assert fake.requests == [
            ("GET", "/v1/customers", {"limit": "2", "created[gt]": str(T0 + 3 * 3600)}),
            (
                "GET",
                "/v1/subscriptions",
                {"limit": "2", "status": "all", "created[gt]": str(T0 + 3 * 3600 + 1)},
            ),
            ("GET", "/v1/invoices", {"limit": "2", "created[gt]": str(T0 + 3 * 3600 + 2)}),
            ("GET", "/v1/customers/cus_4/payment_methods", {"limit": "2", "type": "card"}),
            ("GET", "/v1/events", events),
            ("GET", "/v1/events", {**events, "starting_after": "evt_6"}),
            ("GET", "/v1/events", {**events, "starting_after": "evt_4"}),
            ("GET", "/v1/events", {**events, "starting_after": "evt_2"}),
            # Customers seen before whose cards changed: their cards again (and, when no event
            # carried the customer, the customer, for its default card).
            ("GET", "/v1/customers/cus_3/payment_methods", {"limit": "2", "type": "card"}),
            ("GET", "/v1/customers/cus_3", {}),
            ("GET", "/v1/customers/cus_1/payment_methods", {"limit": "2", "type": "card"}),
            ("GET", "/v1/customers/cus_2/payment_methods", {"limit": "2", "type": "card"}),
        ]
        assert second.events == 7
        assert [(s.entity, s.inserted, s.updated, s.unchanged) for s in second.imports] == [
            ("customers", 1, 0, 0),
            ("subscriptions", 1, 0, 0),
            ("invoices", 1, 0, 0),
            ("payment_methods", 1, 0, 0),
            ("customers", 0, 0, 1),
            ("subscriptions", 0, 1, 0),
            ("invoices", 0, 1, 0),
            ("payment_methods", 1, 1, 0),
            ("payment_methods", 0, 1, 2),
        ]
        assert read_cursors(engine)["events"] == after + 520
        assert read_cursors(engine)["events_read"] == int(SECOND.timestamp())
        db = state(engine)
        assert db["subscriptions"]["sub_1"].status == "canceled"
        assert db["subscriptions"]["sub_1"].canceled_at == datetime.fromtimestamp(after + 100, UTC)
        assert db["invoices"]["in_2"].status == "paid" and db["invoices"]["in_2"].attempts == 2
        assert db["payment_methods"]["pm_3"].exp_year == 2031
        cards = db["payment_methods"]
        assert cards["pm_1b"].customer_id == cards["pm_1"].customer_id
        assert (cards["pm_1b"].is_default, cards["pm_1"].is_default) == (True, False)
        assert not cards["pm_2"].is_default and cards["pm_3"].is_default
        assert db["subscriptions"]["sub_2"].status == "active" and len(db["customers"]) == 4

        fake.requests.clear()
        third = sync_stripe(engine, settings(fake), now=SECOND, page_size=2)
        assert third.imports == [] and third.events == 0
        assert [path for _, path, _ in fake.requests] == [
            "/v1/customers",
            "/v1/subscriptions",
            "/v1/invoices",
            "/v1/events",
        ]

        # No sync for longer than Stripe keeps events: every customer's cards are read again.
        fake.requests.clear()
        later = datetime.fromtimestamp(int(SECOND.timestamp()) + 31 * DAY, UTC)
        fourth = sync_stripe(engine, settings(fake), now=later, page_size=2)
        listed = sorted(path for _, path, _ in fake.requests if path.endswith("/payment_methods"))
        assert listed == [f"/v1/customers/cus_{i}/payment_methods" for i in (1, 2, 3, 4)]
        assert [(s.entity, s.inserted, s.updated, s.unchanged) for s in fourth.imports] == [
            ("payment_methods", 0, 0, 4)
        ]
        assert state(engine)["payment_methods"]["pm_1b"].is_default
        assert read_cursors(engine)["events_read"] == int(later.timestamp())


def test_a_refused_key_is_one_line_without_the_key(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeStripe("rk_test_the_right_key")
    with running(fake):
        with pytest.raises(StripeApiError) as raised:
            sync_stripe(engine, settings(fake), now=FIRST)
        assert "401" in str(raised.value) and "the API key was refused" in str(raised.value)
        assert KEY not in str(raised.value) and "\n" not in str(raised.value)
        assert read_cursors(engine) == {}

        monkeypatch.setenv(
            "RETAIN_DATABASE_URL", str(engine.url.render_as_string(hide_password=False))
        )
        monkeypatch.setenv("RETAIN_STRIPE_API_KEY", KEY)
        monkeypatch.setenv("RETAIN_STRIPE_API_BASE", fake.base)
        result = CliRunner().invoke(app, ["sync", "stripe"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error sync stripe: Stripe answered 401")
    assert KEY not in result.output
