"""Structurally wrong files import nothing and say why in one line: a column the mapping reads
appearing twice, bytes that are not UTF-8 below the header, a Parquet column of lists, a file
cut off in its last value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import Engine

from models.imports.mapping import load_mapping
from models.imports.run import import_file
from tests import stripe_exports as sx
from tests.test_imports import snapshot

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def rejected(engine: Engine, path: Path) -> list[tuple[int | None, str]]:
    before = snapshot(engine)
    summary = import_file(engine, path, load_mapping("stripe-invoices"), now=NOW)
    assert summary.status == "rejected" and summary.inserted == 0
    assert snapshot(engine) == before
    assert summary.reject_file is not None and summary.reject_file.is_file()
    return summary.problems


def test_structurally_wrong_files_import_nothing(engine: Engine, tmp_path: Path) -> None:
    customers = sx.write_csv(tmp_path / "c.csv", sx.CUSTOMER_COLUMNS, sx.customers())
    assert import_file(engine, customers, load_mapping("stripe-customers"), now=NOW).inserted == 6

    twice = [c if c != "Customer Email" else "Status" for c in sx.INVOICE_COLUMNS]
    path = sx.write_csv(tmp_path / "twice.csv", twice, sx.invoices())
    assert rejected(engine, path) == [
        (
            1,
            "column 'Status' appears 2 times in the header; rename the copies so the mapping reads one",
        )
    ]

    good = sx.write_csv(tmp_path / "i.csv", sx.INVOICE_COLUMNS, sx.invoices()).read_bytes()
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(good.replace(b"in_0004,cus_0004", "in_0004,cus_0004\xe9".encode("latin-1")))
    [(line, message)] = rejected(engine, latin1)
    assert message.startswith("the file is not UTF-8 text") and message.endswith(
        "export it as UTF-8"
    )

    cut = tmp_path / "cut.csv"
    cut.write_bytes(good[: good.rindex(b",")])  # the last row loses its last field
    [(line, message)] = rejected(engine, cut)
    assert line == 7 and "has 10 fields, the header 11 (a truncated file" in message

    columns = {name: pa.array([f"x{i}" for i in range(2)]) for name in sx.INVOICE_COLUMNS}
    columns["Status"] = pa.array([["paid"], ["open"]])
    pq.write_table(pa.table(columns), tmp_path / "nested.parquet")
    assert rejected(engine, tmp_path / "nested.parquet") == [
        (
            None,
            "column 'Status' holds list<element: string> values; map a column of text, numbers, "
            "booleans, dates or times",
        )
    ]
