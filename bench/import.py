"""`retain import` of 1,000,000 invoice rows from a Stripe-export-shaped CSV, on SQLite and
PostgreSQL: time and peak memory, next to the bare bulk load of the same file (SQLite: pyarrow
read + executemany into a table of the same columns; PostgreSQL: COPY of the file) as a ratio.
Also times the re-import of the same file (nothing changes) and of an export where 10% changed.

    .venv/bin/python bench/import.py [--rows 1000000] [--customers 100000] [--only sqlite|postgresql]

Each measurement runs in its own process, so its peak resident memory is its own (ru_maxrss).
PostgreSQL: 127.0.0.1:5432 (RETAIN_BENCH_POSTGRES_URL), a fresh database dropped afterwards.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent / "out" / "import"
PG = os.environ.get(
    "RETAIN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
T0 = 1_780_000_000
INVOICE_COLUMNS = [
    "id", "Customer", "Customer Email", "Subscription", "Amount Due", "Amount Paid", "Currency",
    "Status", "Attempt Count", "Date (UTC)", "Paid At (UTC)",
]  # fmt: skip


def write_files(
    rows: int, customers: int, changed_share: float = 0.0, suffix: str = ""
) -> dict[str, Path]:
    """Customers, subscriptions and ``rows`` invoices (deterministic; ``changed_share`` of the
    invoices marked paid later, as in a newer export)."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = {
        name: OUT / f"{name}{suffix}.csv" for name in ("customers", "subscriptions", "invoices")
    }
    if not suffix:
        with paths["customers"].open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "id",
                    "Description",
                    "Email",
                    "Name",
                    "Phone",
                    "Address Country",
                    "Created (UTC)",
                    "Delinquent",
                ]
            )
            for i in range(customers):
                writer.writerow(
                    [
                        f"cus_{i:07d}",
                        "",
                        f"u{i}@example.com",
                        f"Kund {i}, AB",
                        "",
                        "SE",
                        T0 - i,
                        "false",
                    ]
                )
        with paths["subscriptions"].open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "id",
                    "Customer ID",
                    "Customer Email",
                    "Plan",
                    "Product",
                    "Quantity",
                    "Interval",
                    "Amount",
                    "Status",
                    "Created (UTC)",
                    "Start (UTC)",
                    "Current Period End (UTC)",
                    "Canceled At (UTC)",
                ]
            )
            for i in range(customers):
                writer.writerow(
                    [
                        f"sub_{i:07d}",
                        f"cus_{i:07d}",
                        "",
                        "team",
                        "Team",
                        1,
                        "month",
                        4900,
                        "active",
                        T0,
                        T0,
                        T0 + 30 * 86400,
                        "",
                    ]
                )
    every = int(1 / changed_share) if changed_share else 0
    with paths["invoices"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(INVOICE_COLUMNS)
        for i in range(rows):
            c = (i * 7919) % customers
            due = T0 - (i % 365) * 86400
            paid = i % 10 != 3 or (every and i % every == 3)
            writer.writerow([
                f"in_{i:08d}", f"cus_{c:07d}", f"u{c}@example.com", f"sub_{c:07d}", 4900,
                4900 if paid else 0, "usd", "paid" if paid else "open", 1 if paid else 2, due,
                due + 60 if paid else "",
            ])  # fmt: skip
    return paths


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, url: str, path: str) -> dict[str, float | int | str]:
    """One measurement in this process: ``import`` (retain import) or ``bare`` (the baseline)."""
    from models.db import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    if kind == "import":
        from models.imports.mapping import load_mapping
        from models.imports.run import import_file

        summary = import_file(
            engine, Path(path), load_mapping("stripe-invoices"), reject_file=OUT / "rejects.csv"
        )
        result: dict[str, float | int | str] = {
            "inserted": summary.inserted, "updated": summary.updated,
            "unchanged": summary.unchanged, "rejected": summary.rejected,
        }  # fmt: skip
    else:
        result = {"rows": bare_load(engine, Path(path))}
    result["seconds"] = time.perf_counter() - started
    result["peak_mb"] = peak_mb()
    engine.dispose()
    return result


def bare_load(engine: object, path: Path) -> int:
    """The same file into a table of its columns with no parsing, checks or merge."""
    from sqlalchemy.engine import Engine

    assert isinstance(engine, Engine)
    columns = ", ".join(f"c{i} TEXT" for i in range(len(INVOICE_COLUMNS)))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS bare_invoices")
        connection.exec_driver_sql(f"CREATE TABLE bare_invoices ({columns})")
        if connection.dialect.name == "postgresql":
            raw = connection.connection.driver_connection
            with (
                raw.cursor() as cursor,
                cursor.copy("COPY bare_invoices FROM STDIN (FORMAT csv, HEADER true)") as copy,
                path.open("rb") as handle,
            ):  # type: ignore[union-attr]
                while block := handle.read(1 << 20):
                    copy.write(block)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(INVOICE_COLUMNS, "string")
                ),
            )
            rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
            marks = ", ".join("?" * len(INVOICE_COLUMNS))
            connection.exec_driver_sql(f"INSERT INTO bare_invoices VALUES ({marks})", rows)
        count = connection.exec_driver_sql("SELECT count(*) FROM bare_invoices").scalar_one()
        connection.exec_driver_sql("DROP TABLE bare_invoices")
    return int(count)


def measure(kind: str, url: str, path: Path) -> dict[str, float | int | str]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url, "--path", str(path)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {url} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare(url: str, files: dict[str, Path]) -> None:
    from models.db import make_engine
    from models.imports.mapping import load_mapping
    from models.imports.run import import_file
    from models.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    for name in ("customers", "subscriptions"):
        summary = import_file(engine, files[name], load_mapping(f"stripe-{name}"))
        assert summary.rejected == 0, summary.rejects[:3]
    engine.dispose()


def run_backend(backend: str, files: dict[str, Path], updated: Path, rows: int) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"retain_bench_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        db = OUT / "bench.db"
        for leftover in OUT.glob("bench.db*"):
            leftover.unlink()
        url = f"sqlite:///{db}"
    else:
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    try:
        prepare(url, files)
        bare = measure("bare", url, files["invoices"])
        first = measure("import", url, files["invoices"])
        again = measure("import", url, files["invoices"])
        newer = measure("import", url, updated)
        assert bare["rows"] == rows and first["inserted"] == rows and again["unchanged"] == rows
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\n{backend}: {rows:,} invoice rows (load average {load} at the end)")
        print(f"  bare bulk load       {bare['seconds']:6.2f} s   peak {bare['peak_mb']:6.0f} MB")
        for label, r in (
            ("import (first)", first),
            ("re-import (same)", again),
            ("import (10% newer)", newer),
        ):
            print(
                f"  {label:20s} {r['seconds']:6.2f} s   peak {r['peak_mb']:6.0f} MB   "
                f"ratio {r['seconds'] / bare['seconds']:5.1f}x   "
                f"inserted {r['inserted']:,} updated {r['updated']:,} unchanged {r['unchanged']:,}"
            )
    finally:
        if backend == "postgresql":
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.path)))
        return
    started = time.perf_counter()
    files = write_files(args.rows, args.customers)
    updated = write_files(args.rows, args.customers, changed_share=0.1, suffix="-newer")["invoices"]
    print(
        f"wrote the files in {time.perf_counter() - started:.1f} s ({files['invoices'].stat().st_size / 1e6:.0f} MB of invoices)"
    )
    for backend in ("sqlite", "postgresql"):
        if args.only in (None, backend):
            run_backend(backend, files, updated, args.rows)


if __name__ == "__main__":
    main()
