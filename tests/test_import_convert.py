"""Reading source values: times (Unix, ISO with and without offsets), amounts in cents or units,
booleans and vocabularies, checked against Python's own datetime arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from models.imports.convert import convert_batch
from models.imports.mapping import parse_mapping

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAPPING = parse_mapping(
    """\
entity: invoices
timestamps: auto
amounts: units
columns:
  external_id: id
  customer: c
  amount_cents: amount
  status: {column: s, values: {Bezahlt: paid, offen: open}}
  due_at: due
  paid_at: {column: paid, time: unix_ms}
"""
)


def convert(
    **columns: list[str | None],
) -> tuple[list[dict[str, object]], list[tuple[int, str, str]]]:
    n = len(next(iter(columns.values())))
    base: dict[str, list[str | None]] = {
        "id": [f"in_{i}" for i in range(n)],
        "c": ["cus_1"] * n,
        "amount": ["1.00"] * n,
        "s": ["paid"] * n,
        "due": ["0"] * n,
        "paid": [None] * n,
    }
    base.update(columns)
    result = convert_batch(
        pa.table({k: pa.array(v, pa.string()) for k, v in base.items()}), MAPPING, 2
    )
    return result.table.to_pylist(), [(r.line, r.column, r.value) for r in result.rejects]


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def test_times_in_every_accepted_form() -> None:
    rows, rejects = convert(
        due=[
            "1780000000",
            "2026-05-28",
            "2026-05-28 20:26",
            "2026-05-28T20:26:40Z",
            "2026-05-28T22:26:40+02:00",
            "2026-05-28T15:56:40.250-0430",
            "2026-02-30",
            "28/05/2026",
            " 1780000000 ",
        ],
        paid=["1780000000123", None, None, None, None, None, None, None, None],
    )
    assert rejects == [(8, "due", "2026-02-30"), (9, "due", "28/05/2026")]
    got = [row["due_at"] for row in rows]
    assert got == [
        1_780_000_000_000_000,
        micros(datetime(2026, 5, 28, tzinfo=UTC)),
        micros(datetime(2026, 5, 28, 20, 26, tzinfo=UTC)),
        1_780_000_000_000_000,
        1_780_000_000_000_000,
        1_780_000_000_250_000,
        1_780_000_000_000_000,
    ]
    assert rows[0]["paid_at"] == 1_780_000_000_123_000


@settings(max_examples=60, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 31)),
    offset_minutes=st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: m - m % 15),
    colon=st.booleans(),
)
def test_iso_offsets_match_python(moment: datetime, offset_minutes: int, colon: bool) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(tzinfo=zone)
    text = local.isoformat(timespec="microseconds")
    if not colon:
        text = text[:-3] + text[-2:]
    rows, rejects = convert(due=[text])
    assert rejects == []
    assert rows[0]["due_at"] == micros(local.astimezone(UTC))


def test_amounts_in_units_and_vocabularies() -> None:
    rows, rejects = convert(
        amount=["49.00", "0.5", "1234567.89", "-3.10", "4,900", "12.345", ""],
        s=["Bezahlt", "OFFEN", "paid", "void", "paid", "paid", "paid"],
    )
    assert [(r["amount_cents"], r["status"]) for r in rows] == [
        (4900, "paid"),
        (50, "open"),
        (123456789, "paid"),
        (-310, "void"),
    ]
    assert rejects == [(6, "amount", "4,900"), (7, "amount", "12.345"), (8, "amount", "")]
