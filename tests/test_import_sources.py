"""Mapping files validated with file, line and fix; imports from a SQL database (read-only, in
chunks); the ``retain import`` command's output and exit codes; consent kept across imports."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from flows.cli import app
from models.bulk import table
from models.customer_data import Customer
from models.imports.mapping import MappingError, parse_mapping
from models.imports.readers import read_only_engine
from models.imports.run import import_file, import_query
from tests import stripe_exports as sx

runner = CliRunner()

MAPPING = """\
entity: customers
timestamps: iso
columns:
  external_id: account_id
  name: full_name
  email: email
  email_consent: newsletter
  created_at: signed_up
"""


@pytest.mark.parametrize(
    ("text_", "line", "fragment"),
    [
        (
            MAPPING.replace("  name: full_name", "  nmae: full_name"),
            5,
            "no field 'nmae'; did you mean 'name'?",
        ),
        (MAPPING.replace("timestamps: iso", "timestamps: sometimes"), 2, "timestamps"),
        (MAPPING.replace("  created_at: signed_up\n", ""), 3, "missing 'created_at'"),
        (MAPPING + "  status: {column: s}\n", 9, "customers has no field 'status'"),
        (
            MAPPING.replace("entity: customers", "entity: customers\ncolour: red"),
            2,
            "unknown field 'colour'",
        ),
        (
            MAPPING.replace("entity: customers", "entity: subscriptions").replace(
                "  name: full_name", "  status: {column: s, values: {live: alive}}"
            ),
            5,
            "'alive' is not a Retain value; use one of trialing, active",
        ),
        (
            MAPPING.replace("  email: email", "  email: {column: e, value: x}"),
            6,
            "exactly one of column",
        ),
        (MAPPING.replace("columns:", "columns: [oops"), 4, "not valid YAML"),
    ],
)
def test_mapping_problems_name_file_line_and_fix(
    text_: str, line: int | None, fragment: str
) -> None:
    with pytest.raises(MappingError) as raised:
        parse_mapping(text_, "map.yaml")
    problems = raised.value.problems
    assert any(p.line == line and fragment in p.message for p in problems), problems
    assert all(str(p).startswith("map.yaml") for p in problems)


def _source_table(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE warehouse_accounts (account_id TEXT, full_name TEXT, email TEXT, "
                "newsletter BOOLEAN, signed_up TIMESTAMP)"
            )
        )
        connection.execute(
            text("INSERT INTO warehouse_accounts VALUES (:a, :n, :e, :c, :s)"),
            [
                {
                    "a": f"acc_{i}",
                    "n": f"Zoë {i}",
                    "e": f"z{i}@example.com" if i != 4 else "broken@",
                    "c": i % 2 == 0,
                    "s": f"2026-0{1 + i % 9}-15 08:00:00",
                }
                for i in range(7)
            ],
        )


def test_import_from_sql_is_read_only_and_chunked(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    _source_table(engine)
    query = "SELECT account_id, full_name, email, newsletter, signed_up FROM warehouse_accounts ORDER BY account_id"
    summary = import_query(
        engine,
        database_url,
        query,
        parse_mapping(MAPPING),
        reject_file=tmp_path / "rejects.csv",
        label="warehouse",
        chunk_rows=2,
    )
    assert (summary.inserted, summary.rejected) == (6, 1)
    assert [(r.line, r.column, r.value) for r in summary.rejects] == [(5, "email", "broken@")]
    with engine.connect() as connection:
        rows = {r.external_id: r for r in connection.execute(select(table(Customer))).all()}
    assert rows["acc_2"].email_consent is True and rows["acc_1"].email_consent is False
    assert rows["acc_3"].created_at.isoformat() == "2026-04-15T08:00:00+00:00"

    source = read_only_engine(database_url)
    try:
        with (
            pytest.raises(Exception, match=r"(?i)read-only|readonly"),
            source.connect() as connection,
        ):
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            connection.execute(text("DELETE FROM warehouse_accounts"))
    finally:
        source.dispose()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM warehouse_accounts")).scalar_one() == 7


def test_import_command_output_and_exit_codes(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    path = sx.write_csv(tmp_path / "customers.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    first = runner.invoke(app, ["import", str(path), "--mapping", "stripe-customers"])
    assert first.exit_code == 0, first.output
    assert "→ customers: 6 rows, 6 inserted, 0 updated, 0 unchanged, 0 rejected" in first.output
    again = runner.invoke(app, ["import", str(path), "--mapping", "stripe-customers"])
    assert (
        again.exit_code == 0
        and "0 inserted, 0 updated, 6 unchanged, 0 rejected (no change)" in again.output
    )

    rows = sx.invoices()
    rows[0][7] = "refunded"
    invoices = sx.write_csv(tmp_path / "invoices.csv", sx.INVOICE_COLUMNS, rows)
    rejected = runner.invoke(app, ["import", str(invoices), "--mapping", "stripe-invoices"])
    assert rejected.exit_code == 1
    assert "invoices.csv.rejects.csv" in rejected.output

    wrong = sx.write_csv(tmp_path / "wrong.csv", ["id", "Email"], [["cus_1", "a@example.com"]])
    structural = runner.invoke(app, ["import", str(wrong), "--mapping", "stripe-customers"])
    assert structural.exit_code == 2
    assert "column 'Name' of the mapping is not in the file" in structural.output
    assert "nothing was imported" in structural.output

    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text(MAPPING.replace("  name: full_name", "  nmae: full_name"))
    mapping_error = runner.invoke(app, ["import", str(path), "--mapping", str(bad_map)])
    assert mapping_error.exit_code == 2
    assert mapping_error.output.strip().startswith(
        f"error {bad_map}:5: customers has no field 'nmae'"
    )
    assert "Traceback" not in mapping_error.output + structural.output + rejected.output


def test_an_import_without_consent_columns_never_revokes_consent(
    engine: Engine, tmp_path: Path
) -> None:
    with_consent = tmp_path / "with_consent.yaml"
    with_consent.write_text(
        "entity: customers\ncolumns:\n  external_id: id\n  created_at: Created (UTC)\n"
        "  email_consent: {value: true}\n"
    )
    path = sx.write_csv(tmp_path / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    from models.imports.mapping import load_mapping

    assert import_file(engine, path, load_mapping("stripe-customers")).inserted == 6
    assert import_file(engine, path, load_mapping(with_consent)).updated == 6
    again = import_file(engine, path, load_mapping("stripe-customers"))  # no consent column
    assert (again.updated, again.unchanged) == (0, 6)
    with engine.connect() as connection:
        assert (
            connection.execute(select(table(Customer).c.email_consent)).scalars().all()
            == [True] * 6
        )


def test_identical_event_rows_without_ids_are_rejected_not_doubled(
    engine: Engine, tmp_path: Path
) -> None:
    from models.imports.mapping import load_mapping

    customers = sx.write_csv(tmp_path / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    import_file(engine, customers, load_mapping("stripe-customers"))
    row = ["cus_0000", "2026-05-01T09:00:00Z", "login", 1]
    path = sx.write_csv(
        tmp_path / "e.csv",
        ["customer_id", "timestamp", "event", "value"],
        [row, row, ["cus_0001", 1780000000, "login", 1]],
    )
    summary = import_file(engine, path, load_mapping("product-events"))
    assert (summary.inserted, summary.rejected) == (1, 2)
    assert {(r.line, r.column) for r in summary.rejects} == {(2, "external_id"), (3, "external_id")}


def test_a_malformed_setting_is_one_line(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_DATABASE_URL", database_url)
    monkeypatch.setenv("RETAIN_DEFAULT_PHONE_REGION", "Sweden")
    path = sx.write_csv(tmp_path / "customers.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    result = runner.invoke(app, ["import", str(path), "--mapping", "stripe-customers"])
    assert result.exit_code == 2
    assert result.output.startswith("error import: RETAIN_DEFAULT_PHONE_REGION is not valid")
    assert len(result.output.strip().splitlines()) == 1
