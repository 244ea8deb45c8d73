"""File imports on Stripe-export-shaped files: first import, re-import (no change), an updated
export (only the changes applied), bad rows, structurally wrong files, and atomicity."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from models.bulk import table
from models.customer_data import Customer, Invoice, PaymentMethod, Subscription
from models.imports import run as run_module
from models.imports.mapping import load_mapping
from models.imports.run import ImportSummary, import_file
from models.imports.tables import ImportRun
from models.records import Suppression
from tests import stripe_exports as sx

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
TABLES = [
    "customers",
    "subscriptions",
    "invoices",
    "payment_methods",
    "activity_events",
    "suppressions",
]


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the customer tables and suppressions, for before/after comparisons."""
    with engine.connect() as connection:
        return {
            name: sorted(
                tuple(row) for row in connection.execute(text(f"SELECT * FROM {name}")).all()
            )
            for name in TABLES
        }


def write_business(folder: Path, count: int = 6) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "stripe-customers": sx.write_csv(
            folder / "customers.csv", sx.CUSTOMER_COLUMNS, sx.customers(count)
        ),
        "stripe-subscriptions": sx.write_csv(
            folder / "subscriptions.csv", sx.SUBSCRIPTION_COLUMNS, sx.subscriptions(count)
        ),
        "stripe-invoices": sx.write_csv(
            folder / "invoices.csv", sx.INVOICE_COLUMNS, sx.invoices(count)
        ),
        "stripe-payment-methods": sx.write_csv(
            folder / "payment_methods.csv", sx.PAYMENT_METHOD_COLUMNS, sx.payment_methods(count)
        ),
    }


def import_all(engine: Engine, files: dict[str, Path], now: datetime) -> dict[str, ImportSummary]:
    return {
        name: import_file(engine, path, load_mapping(name), now=now) for name, path in files.items()
    }


def counts(summary: ImportSummary) -> tuple[int, int, int, int]:
    return summary.inserted, summary.updated, summary.unchanged, summary.rejected


def test_first_import_then_reimport_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    files = write_business(tmp_path / "export")
    first = import_all(engine, files, NOW)
    assert {name: counts(s) for name, s in first.items()} == {
        name: (6, 0, 0, 0) for name in files
    }, {name: s.rejects for name, s in first.items()}

    with engine.connect() as connection:
        customers = {
            row.external_id: row for row in connection.execute(select(table(Customer))).all()
        }
        subs = {r.external_id: r for r in connection.execute(select(table(Subscription))).all()}
        invoices = {r.external_id: r for r in connection.execute(select(table(Invoice))).all()}
        cards = {r.external_id: r for r in connection.execute(select(table(PaymentMethod))).all()}
    assert customers["cus_0000"].name == "Smith, John"
    assert [customers[f"cus_{i:04d}"].name for i in range(1, 5)] == sx.NAMES[1:5]
    # Phones normalised to E.164, read in the row's country when they have no +code.
    assert customers["cus_0000"].phone == "+16502530000"
    assert customers["cus_0001"].phone == "+46701234567"
    assert customers["cus_0002"].phone == "+81312345678"
    assert customers["cus_0003"].phone is None and customers["cus_0003"].email is None
    # No consent column in a Stripe export: no consent, never yes.
    assert not any(c.email_consent or c.sms_consent for c in customers.values())
    assert customers["cus_0000"].created_at == datetime.fromtimestamp(sx.T0 - 400 * sx.DAY, UTC)
    assert customers["cus_0000"].updated_at == NOW
    # A yearly subscription of 468.00 is 39.00 a month.
    assert (subs["sub_0002"].billing_interval, subs["sub_0002"].mrr_cents) == ("year", 3900)
    assert subs["sub_0001"].customer_id == customers["cus_0001"].id
    assert (invoices["in_0001"].status, invoices["in_0001"].attempts) == ("open", 2)
    assert invoices["in_0001"].paid_at is None and invoices["in_0000"].paid_at is not None
    assert invoices["in_0003"].subscription_id == subs["sub_0003"].id
    assert cards["pm_0000"].expires_on == date(2026, 6, 30)

    before = snapshot(engine)
    again = import_all(engine, files, LATER)
    assert {name: counts(s) for name, s in again.items()} == {name: (0, 0, 6, 0) for name in files}
    assert all(s.changed_nothing for s in again.values())
    assert snapshot(engine) == before
    with engine.connect() as connection:
        runs = connection.execute(select(table(ImportRun)).order_by(table(ImportRun).c.id)).all()
    assert len(runs) == 8 and {r.status for r in runs} == {"applied"}
    assert runs[0].sha256 == runs[4].sha256 and runs[0].inserted == 6 and runs[4].unchanged == 6


def test_updated_export_applies_only_the_changes(engine: Engine, tmp_path: Path) -> None:
    import_all(engine, write_business(tmp_path / "v1"), NOW)
    subs, invoices, cards = sx.subscriptions(), sx.invoices(), sx.payment_methods()
    subs[1][8] = "canceled"
    subs[1][12] = sx.T0 + 2 * sx.DAY
    subs[4][3], subs[4][7] = "starter", 1_900  # a downgrade
    invoices[1][5], invoices[1][7], invoices[1][10] = 4_900, "paid", sx.T0 + sx.DAY  # recovered
    cards[2][5], cards[2][6] = 12, 2029  # card updated
    cards.append(["pm_0100", "cus_0005", "card", "mastercard", "5454", 3, 2030, sx.T0])  # new card
    folder = tmp_path / "v2"
    folder.mkdir()
    files = {
        "stripe-customers": sx.write_csv(folder / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers()),
        "stripe-subscriptions": sx.write_csv(folder / "s.csv", sx.SUBSCRIPTION_COLUMNS, subs),
        "stripe-invoices": sx.write_csv(folder / "i.csv", sx.INVOICE_COLUMNS, invoices),
        "stripe-payment-methods": sx.write_csv(folder / "p.csv", sx.PAYMENT_METHOD_COLUMNS, cards),
    }
    second = import_all(engine, files, LATER)
    assert {name: counts(s) for name, s in second.items()} == {
        "stripe-customers": (0, 0, 6, 0),
        "stripe-subscriptions": (0, 2, 4, 0),
        "stripe-invoices": (0, 1, 5, 0),
        "stripe-payment-methods": (1, 1, 5, 0),
    }
    with engine.connect() as connection:
        s = {r.external_id: r for r in connection.execute(select(table(Subscription))).all()}
        i = {r.external_id: r for r in connection.execute(select(table(Invoice))).all()}
        p = {r.external_id: r for r in connection.execute(select(table(PaymentMethod))).all()}
    assert (s["sub_0001"].status, s["sub_0001"].updated_at) == ("canceled", LATER)
    assert s["sub_0001"].canceled_at == datetime.fromtimestamp(sx.T0 + 2 * sx.DAY, UTC)
    assert s["sub_0000"].updated_at == NOW  # untouched rows keep their time
    assert (s["sub_0004"].plan, s["sub_0004"].previous_plan, s["sub_0004"].mrr_cents) == (
        "starter",
        "team",
        1900,
    )
    assert (s["sub_0004"].previous_mrr_cents, s["sub_0004"].plan_changed_at) == (4900, LATER)
    assert s["sub_0001"].previous_plan is None  # a status change is not a plan change
    assert (i["in_0001"].status, i["in_0001"].updated_at) == ("paid", LATER)
    assert i["in_0003"].updated_at == NOW
    assert p["pm_0002"].expires_on == date(2029, 12, 31) and p["pm_0002"].updated_at == LATER
    assert p["pm_0100"].last4 == "5454"


def test_bad_rows_are_rejected_with_file_line_column_value_and_reason(
    engine: Engine, tmp_path: Path
) -> None:
    import_all(engine, write_business(tmp_path / "v1"), NOW)
    rows = sx.invoices()
    rows[0][4] = "49.00"  # units where cents are expected
    rows[1][9] = "next tuesday"
    rows[2][7] = "exploded"  # unknown status
    rows[3][1] = "cus_9999"  # unknown customer
    rows.append(list(rows[5]))  # duplicate id: both copies rejected
    rows.append(["in_0200", "cus_0001", "", "", "", 0, "usd", "open", 0, sx.T0, ""])  # empty amount
    path = sx.write_csv(tmp_path / "invoices.csv", sx.INVOICE_COLUMNS, rows)
    summary = import_file(engine, path, load_mapping("stripe-invoices"), now=LATER)
    assert summary.status == "applied"
    assert (summary.rows, summary.inserted, summary.updated, summary.rejected) == (8, 0, 0, 7)
    assert summary.unchanged == 1  # in_0004, the one clean row
    found = {(r.line, r.column, r.value) for r in summary.rejects}
    assert found == {
        (2, "Amount Due", "49.00"),
        (3, "Date (UTC)", "next tuesday"),
        (4, "Status", "exploded"),
        (5, "customer", "cus_9999"),
        (7, "external_id", "in_0005"),
        (8, "external_id", "in_0005"),
        (9, "Amount Due", ""),
    }
    assert summary.reject_file == tmp_path / "invoices.csv.rejects.csv"
    written = summary.reject_file.read_text(encoding="utf-8").splitlines()
    assert written[0] == "file,line,column,value,reason"
    assert written[3].startswith(
        f'{path},4,Status,exploded,"unknown status value; add it under values:'
    )
    assert len(written) == 1 + 7


def test_bad_contact_data_and_time_zones(engine: Engine, tmp_path: Path) -> None:
    mapping = tmp_path / "customers.yaml"
    mapping.write_text(
        """entity: customers
timestamps: iso
columns:
  external_id: customer_id
  name: full_name
  email: email
  phone: phone
  timezone: tz
  country: country
  email_consent: {column: marketing_ok}
  sms_consent: {column: sms_ok}
  email_unsubscribed: unsubscribed
  created_at: signed_up
""",
        encoding="utf-8",
    )
    columns = ["customer_id", "full_name", "email", "phone", "tz", "country", "marketing_ok", "sms_ok", "unsubscribed", "signed_up"]  # fmt: skip
    rows = [
        ["c1", "Ann", "ann@example.com", "+46 70 123 45 67", "Europe/Stockholm", "se", "yes", "no", "no", "2026-01-05T10:00:00Z"],
        ["c2", "Bo", "not-an-email", "", "Europe/Stockholm", "SE", "yes", "", "", "2026-01-05"],
        ["c3", "Cy", "cy@example.com", "12", "UTC", "SE", "", "", "", "2026-01-05"],
        ["c4", "Di", "di@example.com", "", "Mars/Olympus", "US", "", "", "", "2026-01-05"],
        ["c5", "Ed", "ed@example.com", "", "", "US", "maybe", "", "", "2026-01-05"],
        ["c6", "Fa", "fa@example.com", "", "America/New_York", "US", "Y", "", "TRUE", "2026-02-30"],
        ["c7", "Gu", "gu@example.com", "", "America/New_York", "US", "1", "", "TRUE", "2026-03-01 08:30"],
    ]  # fmt: skip
    path = sx.write_csv(tmp_path / "people.csv", columns, rows)
    summary = import_file(engine, path, load_mapping(mapping), now=NOW)
    assert {(r.line, r.column) for r in summary.rejects} == {
        (3, "email"),
        (4, "phone"),
        (5, "tz"),
        (6, "marketing_ok"),
        (7, "signed_up"),
    }
    assert "is not valid" in next(r.reason for r in summary.rejects if r.column == "email")
    assert summary.inserted == 2
    with engine.connect() as connection:
        rows_db = {r.external_id: r for r in connection.execute(select(table(Customer))).all()}
        suppressed = connection.execute(select(table(Suppression))).all()
    ann = rows_db["c1"]
    assert (ann.phone, ann.country, ann.email_consent, ann.sms_consent) == (
        "+46701234567",
        "SE",
        True,
        False,
    )
    assert rows_db["c7"].created_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert [(s.customer_id, s.channel, s.reason) for s in suppressed] == [
        (rows_db["c7"].id, "email", "unsubscribed")
    ]


def test_missing_column_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    columns = [c if c != "Status" else "State" for c in sx.INVOICE_COLUMNS]
    path = sx.write_csv(tmp_path / "invoices.csv", columns, sx.invoices())
    before = snapshot(engine)
    summary = import_file(engine, path, load_mapping("stripe-invoices"), now=NOW)
    assert summary.status == "rejected" and summary.inserted == 0
    assert summary.problems == [
        (
            1,
            "column 'Status' of the mapping is not in the file (did you mean 'State'?); fix the mapping or export that column",
        )
    ]
    assert snapshot(engine) == before


def test_truncated_file_imports_nothing(engine: Engine, tmp_path: Path) -> None:
    customers = sx.write_csv(tmp_path / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    import_file(engine, customers, load_mapping("stripe-customers"), now=NOW)
    path = sx.write_csv(tmp_path / "invoices.csv", sx.INVOICE_COLUMNS, sx.invoices())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # cut in the middle of the last row
    before = snapshot(engine)
    summary = import_file(engine, path, load_mapping("stripe-invoices"), now=NOW)
    assert summary.status == "rejected"
    assert summary.problems[0][0] == 7 and "truncated" in summary.problems[0][1]
    assert snapshot(engine) == before
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(data[: data.index(b"in_0005")] + b'in_0005,"cus_0005,unterminated')
    summary = import_file(engine, quoted, load_mapping("stripe-invoices"), now=NOW)
    assert summary.status == "rejected" and snapshot(engine) == before


def test_failure_half_way_leaves_the_database_exactly_as_before(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_all(engine, write_business(tmp_path / "v1"), NOW)
    before = snapshot(engine)
    subs = sx.subscriptions()
    subs[0][8] = "past_due"
    path = sx.write_csv(tmp_path / "s.csv", sx.SUBSCRIPTION_COLUMNS, subs)
    real_merge = run_module.merge

    written: list[str] = []

    def merge_then_crash(connection: Any, *args: Any, **kwargs: Any) -> Any:
        real_merge(connection, *args, **kwargs)  # the rows are written...
        status = "SELECT status FROM subscriptions WHERE external_id = 'sub_0000'"
        written.append(connection.execute(text(status)).scalar_one())
        raise RuntimeError("disk full")  # ...and then the process fails

    monkeypatch.setattr(run_module, "merge", merge_then_crash)
    with pytest.raises(RuntimeError, match="disk full"):
        import_file(engine, path, load_mapping("stripe-subscriptions"), now=LATER)
    assert written == ["past_due"]  # inside the transaction the change was written
    assert snapshot(engine) == before


def test_parquet_with_typed_columns(engine: Engine, tmp_path: Path) -> None:
    files = write_business(tmp_path / "v1")
    del files["stripe-invoices"]
    import_all(engine, files, NOW)
    rows = sx.invoices()
    columns = {name: [row[i] for row in rows] for i, name in enumerate(sx.INVOICE_COLUMNS)}
    columns["Paid At (UTC)"] = [v if v != "" else None for v in columns["Paid At (UTC)"]]
    typed = pa.table(columns)
    assert typed.schema.field("Amount Due").type == pa.int64()
    path = tmp_path / "invoices.parquet"
    pq.write_table(typed, path)
    summary = import_file(engine, path, load_mapping("stripe-invoices"), now=NOW)
    assert counts(summary) == (6, 0, 0, 0)
    csv_path = sx.write_csv(tmp_path / "i.csv", sx.INVOICE_COLUMNS, rows)
    assert counts(import_file(engine, csv_path, load_mapping("stripe-invoices"), now=LATER)) == (
        0,
        0,
        6,
        0,
    )


def test_product_events_reimport_is_idempotent(engine: Engine, tmp_path: Path) -> None:
    customers = sx.write_csv(tmp_path / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    import_file(engine, customers, load_mapping("stripe-customers"), now=NOW)
    rows = [
        ["cus_0000", "2026-05-01T09:00:00Z", "login", 1],
        ["cus_0000", "2026-05-01T09:05:00Z", "export_report", 3],
        ["cus_0001", "2026-05-02T10:00:00+02:00", "ticket_opened", 1],
        ["cus_0002", "2026-05-02", "onboarding_completed", ""],
    ]
    path = sx.write_csv(
        tmp_path / "events.csv", ["customer_id", "timestamp", "event", "value"], rows
    )
    first = import_file(engine, path, load_mapping("product-events"), now=NOW)
    again = import_file(engine, path, load_mapping("product-events"), now=LATER)
    assert counts(first) == (4, 0, 0, 0) and counts(again) == (0, 0, 4, 0)
    with engine.connect() as connection:
        events = connection.execute(
            text("SELECT kind, name, quantity FROM activity_events ORDER BY occurred_at")
        ).all()
    assert [tuple(e) for e in events] == [
        ("login", "login", 1),
        ("feature_use", "export_report", 3),
        ("milestone", "onboarding_completed", 1),
        ("support_ticket", "ticket_opened", 1),
    ]


def test_a_large_import_refreshes_the_planner_statistics(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a bulk change of ANALYZE_AFTER_ROWS rows or more, the planner knows the table's size
    (issue 12: statistics after bulk writes); the threshold is lowered to this file's size."""
    import models.imports.run as run

    monkeypatch.setattr(run, "ANALYZE_AFTER_ROWS", 6)
    files = write_business(tmp_path / "export")
    import_all(engine, files, NOW)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            stats = connection.exec_driver_sql(
                "SELECT stat FROM sqlite_stat1 WHERE tbl = 'customers'"
            ).all()
            assert stats and all(int(stat.split()[0]) == 6 for (stat,) in stats)
        else:
            analyzed = connection.exec_driver_sql(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'customers'"
            ).scalar()
            assert analyzed is not None
