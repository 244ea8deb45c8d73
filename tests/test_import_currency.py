"""Amounts in each currency's minor unit: JPY has none, EUR two decimals, KWD three (Babel's CLDR
data), from files in units or minor units and from Stripe, whose unit differs for a few currencies
(ISK and HUF count hundredths in Stripe's API, none in CLDR)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.bulk import table
from models.customer_data import Invoice, Subscription
from models.imports.convert import convert_batch
from models.imports.currency import minor_digits, stripe_digits
from models.imports.mapping import parse_mapping
from models.imports.stripe_objects import (
    API_MAPPINGS,
    customer_row,
    invoice_row,
    rows_table,
    subscription_row,
)
from models.imports.stripe_sync import _apply
from tests import stripe_fixtures as sf


def mapping(amounts: str, currency: str | None = None, column: bool = True) -> object:
    lines = [
        "entity: invoices",
        f"amounts: {amounts}",
        *([f"currency: {currency}"] if currency else []),
        "columns:",
        "  external_id: id",
        "  customer: c",
        *(["  currency: cur"] if column else []),
        "  amount_cents: amount",
        "  status: {value: paid}",
        "  due_at: {value: 0}",
    ]
    return parse_mapping("\n".join(lines))


def convert(
    amounts: list[str], currencies: list[str | None], unit: str = "units"
) -> tuple[list[int | None], list[tuple[int, str]]]:
    n = len(amounts)
    source = pa.table(
        {
            "id": pa.array([f"in_{i}" for i in range(n)]),
            "c": pa.array(["cus_1"] * n),
            "cur": pa.array(currencies, pa.string()),
            "amount": pa.array(amounts, pa.string()),
        }
    )
    result = convert_batch(source, mapping(unit), 2)  # type: ignore[arg-type]
    got: dict[int, int | None] = {r["line"]: r["amount_cents"] for r in result.table.to_pylist()}
    return [got.get(line) for line in range(2, 2 + n)], [(r.line, r.reason) for r in result.rejects]


def test_babel_and_stripe_decimals() -> None:
    assert [minor_digits(c) for c in ("JPY", "eur", "KWD", "BHD", "ISK", None)] == [
        0,
        2,
        3,
        3,
        0,
        2,
    ]
    assert [stripe_digits(c) for c in ("jpy", "EUR", "kwd", "isk", "huf", "ugx")] == [
        0,
        2,
        3,
        2,
        2,
        0,
    ]


def test_amounts_in_units_follow_the_rows_currency() -> None:
    values, rejects = convert(
        ["4900", "4900.00", "49.00", "49.5", "4.900", "4.9", "-0.125", "49.5", "49.001", "1.2345"],
        ["JPY", "jpy", "EUR", "EUR", "KWD", "KWD", "BHD", "JPY", "EUR", "KWD"],
    )
    assert values == [4900, 4900, 4900, 4950, 4900, 4900, -125, None, None, None]
    assert rejects == [
        (9, "more decimals than JPY has (0); check the amount and its currency"),
        (10, "more decimals than EUR has (2); check the amount and its currency"),
        (11, "more decimals than KWD has (3); check the amount and its currency"),
    ]


def test_minor_units_and_stripe_units() -> None:
    currencies: list[str | None] = ["JPY", "EUR", "KWD", "ISK", "HUF", None]
    amounts = ["4900", "4900", "4900", "490000", "123450", "4900"]
    assert convert(amounts, currencies, "cents") == (
        [4900, 4900, 4900, 490000, 123450, 4900],
        [],
    )
    # Stripe: ¥4,900, €49.00 and KWD 4.900 as they are; ISK and HUF from hundredths to whole units
    # (1,234.50 Ft rounds half to even).
    assert convert(amounts, currencies, "stripe") == ([4900, 4900, 4900, 4900, 1234, 4900], [])


def test_a_mapping_level_currency_applies_to_rows_without_a_currency_column() -> None:
    source = pa.table({"id": ["in_1"], "c": ["cus_1"], "amount": ["4.250"]})
    result = convert_batch(source, mapping("units", "KWD", column=False), 2)  # type: ignore[arg-type]
    assert result.rejects == [] and result.table.column("amount_cents").to_pylist() == [4250]


@settings(max_examples=50, deadline=None)
@given(
    currency=st.sampled_from(["JPY", "EUR", "KWD", "USD", "BHD", "CLP"]),
    minor=st.integers(min_value=-(10**12), max_value=10**12),
)
def test_units_round_trip_exactly(currency: str, minor: int) -> None:
    digits = minor_digits(currency)
    sign, whole = ("-" if minor < 0 else ""), abs(minor)
    text = f"{sign}{whole // 10**digits}" + (f".{whole % 10**digits:0{digits}d}" if digits else "")
    assert convert([text], [currency]) == ([minor], [])


def test_stripe_objects_in_jpy_eur_and_kwd(engine: Engine) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    customers = [sf.customer(i, sf.T0) for i in range(3)]
    _apply(engine, "customers", [customer_row(c) for c in customers], now, now, {})
    prices = {"jpy": 4_900, "eur": 4_900, "kwd": 4_900}
    subs, invoices = [], []
    for i, (currency, amount) in enumerate(prices.items()):
        sub = sf.subscription(i, sf.T0 + 1)
        sub["currency"] = currency
        sub["items"]["data"][0]["price"]["unit_amount"] = amount
        sub["items"]["data"][0]["quantity"] = 1
        subs.append(subscription_row(sub))
        invoice = sf.invoice(i, sf.T0 + 2, status="paid")
        invoice["currency"], invoice["amount_due"] = currency, amount
        invoices.append(invoice_row(invoice))
    assert rows_table(subs, API_MAPPINGS["subscriptions"]).column("currency").to_pylist() == [
        "jpy",
        "eur",
        "kwd",
    ]
    _apply(engine, "subscriptions", subs, now, now, {})
    [summary] = _apply(engine, "invoices", invoices, now, now, {})
    assert summary.inserted == 3 and summary.rejects == []
    with engine.connect() as connection:
        mrr = dict(
            connection.execute(select(table(Subscription).c["external_id", "mrr_cents"])).all()
        )
        due = dict(
            connection.execute(select(table(Invoice).c["external_id", "amount_cents"])).all()
        )
    # ¥4,900, €49.00 and KWD 4.900: each 4900 of its own minor unit.
    assert mrr == {"sub_0": 4900, "sub_1": 4900, "sub_2": 4900}
    assert due == {"in_0": 4900, "in_1": 4900, "in_2": 4900}
