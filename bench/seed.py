"""Seeding the synthetic business at scale, next to the bare bulk load of the same rows.

For each database, two fresh child processes (so peak memory is measured per run):

* ``seed``: ``models.seed.seed_business(engine, BusinessConfig(customers=N))`` — generate the
  business block by block, convert, load, ANALYZE — timed end to end;
* ``bare``: the same blocks generated and converted to tuples *untimed*, then only the driver's
  bulk load of those rows timed (SQLite ``executemany``, PostgreSQL ``COPY``), in one
  transaction, with the same deferred index and foreign-key builds (and SQLite cache) as the
  seed: the floor any seeding of these rows pays, so the ratio is what generating and converting
  the rows adds. (Loading into the indexed tables row by row instead takes several times longer:
  on SQLite about 6x for the activity table, which is why the seed defers them.)

The seeded database is kept (bench/out/select-assign-N.db, PostgreSQL ``retain_bench_N``) for
bench/select_assign.py. Prints wall time, peak RSS (``resource.getrusage`` max RSS of the child) and the ratio.

    .venv/bin/python bench/seed.py [--customers 1000000] [--databases sqlite,postgresql]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def child(mode: str, url: str, customers: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from experiments.simulation.business import BusinessConfig, business_blocks
    from models.bulk import (
        LOAD_CHUNK,
        bulk_load,
        foreign_keys_deferred,
        next_ids,
        python_columns,
        secondary_indexes_deferred,
        sqlite_cache,
    )
    from models.db import make_engine
    from models.migrate import upgrade
    from models.seed import _ALL_TABLES, _rows, seed_business

    engine = make_engine(url)
    upgrade(engine)
    config = BusinessConfig(customers=customers)
    rows = 0
    if mode == "seed":
        start = time.perf_counter()
        summary = seed_business(engine, config)
        elapsed = time.perf_counter() - start
        rows = sum(vars(summary).values())
    else:
        elapsed = 0.0
        with engine.begin() as connection:
            first = {name: next_ids(connection, name) for name in _ALL_TABLES}
            done = dict.fromkeys(_ALL_TABLES, 0)
            start = time.perf_counter()
            deferred = ExitStack()
            deferred.enter_context(sqlite_cache(connection))
            deferred.enter_context(secondary_indexes_deferred(connection, _ALL_TABLES))
            deferred.enter_context(foreign_keys_deferred(connection, _ALL_TABLES))
            elapsed += time.perf_counter() - start
            for block in business_blocks(config):
                for name, columns in _rows(block, first, done).items():
                    n = len(next(iter(columns.values())))
                    for lo in range(0, n, LOAD_CHUNK):
                        part = {k: v[lo : lo + LOAD_CHUNK] for k, v in columns.items()}
                        values = python_columns(connection.dialect.name, part)
                        start = time.perf_counter()
                        bulk_load(connection, name, values)
                        elapsed += time.perf_counter() - start
                    done[name] += n
                    rows += n
            start = time.perf_counter()
            deferred.close()  # the indexes and foreign keys, built once as the seed does
        elapsed += time.perf_counter() - start  # and the commit
    engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": elapsed, "peak_mb": peak_mb, "rows": rows}


def run(mode: str, url: str, customers: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--customers", str(customers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def fresh_url(kind: str, postgres_url: str, keep_as: str | None = None) -> tuple[str, Any]:
    """A URL of a new empty database and a function that drops it (or, with ``keep_as``, a
    database of that name emptied first and kept afterwards, for bench/select_assign.py)."""
    if kind == "sqlite":
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / (f"{keep_as}.db" if keep_as else f"seed-{uuid.uuid4().hex[:8]}.db")
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        if keep_as:
            return f"sqlite:///{path}", lambda: None

        def drop_file() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

        return f"sqlite:///{path}", drop_file
    from sqlalchemy import create_engine, make_url, text

    name = keep_as.replace("-", "_") if keep_as else f"retain_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop_database() -> None:
        if keep_as:
            admin.dispose()
            return
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    return url, drop_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--child", choices=["seed", "bare"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.customers)))
        return
    for kind in args.databases.split(","):
        results = {}
        for mode in ("bare", "seed"):
            keep = (
                f"select-assign-{args.customers}" if mode == "seed" and kind == "sqlite" else None
            )
            keep = keep or (f"retain_bench_{args.customers}" if mode == "seed" else None)
            url, drop = fresh_url(kind, args.postgres_url, keep)
            try:
                results[mode] = run(mode, url, args.customers)
            finally:
                drop()
        seed, bare = results["seed"], results["bare"]
        print(
            f"{kind:<10} {args.customers:>9,} customers {seed['rows']:>11,} rows:"
            f" seed {seed['seconds']:7.1f} s, peak {seed['peak_mb']:6.0f} MB |"
            f" bare {'COPY' if kind == 'postgresql' else 'executemany'}"
            f" {bare['seconds']:7.1f} s (peak {bare['peak_mb']:5.0f} MB) |"
            f" ratio {seed['seconds'] / bare['seconds']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
