"""Churn-risk scoring of every live customer of a large synthetic business, next to the bare
``INSERT ... SELECT`` of the feature query it reads.

The big database is the one ``bench/select_assign.py`` seeds (kept under bench/out/ or in the
PostgreSQL database ``retain_bench_<N>``). The model is trained once on a 20,000-customer business
(bench/out/select-assign-20000.db, seeded on first use) and its stored row copied into the big
database: training reads a year of history per snapshot, which is not what is measured here.
Then, each in a fresh child process (peak memory is the child's max RSS):

* ``retain``: ``models.risk.score_customers`` at the business's as_of — the feature query, the
  model as one SQL expression, deciles by a window, one ``INSERT ... SELECT`` into
  ``risk_scores`` (its rows are deleted afterwards so the bench can rerun);
* ``bare``: in a transaction that is rolled back, the same feature query (the model's features,
  live customers) into a temporary table: the floor of reading those features in SQL.

    .venv/bin/python bench/risk_score.py [--customers 1000000] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL_CUSTOMERS = 20_000


def trained_model_row() -> dict[str, Any]:
    """The stored row of a model trained on the 20,000-customer business (trained once)."""
    from select_assign import seeded_url
    from sqlalchemy import select

    from experiments.simulation.business import BusinessConfig
    from models.bulk import table
    from models.db import make_engine
    from models.risk import train_model
    from models.risk_tables import RiskModel

    engine = make_engine(seeded_url("sqlite", MODEL_CUSTOMERS))
    models = table(RiskModel)
    with engine.connect() as connection:
        row = connection.execute(select(models).order_by(models.c.id.desc()).limit(1)).first()
    if row is None:
        started = time.perf_counter()
        train_model(engine, BusinessConfig().as_of)
        print(f"  trained the model in {time.perf_counter() - started:.0f} s", flush=True)
        with engine.connect() as connection:
            row = connection.execute(select(models).order_by(models.c.id.desc()).limit(1)).one()
    engine.dispose()
    return {k: v for k, v in row._mapping.items() if k != "id"}


def install_model(url: str, row: dict[str, Any]) -> None:
    from sqlalchemy import insert, select

    from models.bulk import table
    from models.db import make_engine
    from models.risk_tables import RiskModel

    engine = make_engine(url)
    models = table(RiskModel)
    with engine.begin() as connection:
        have = connection.scalar(select(models.c.id).where(models.c.version == row["version"]))
        if have is None:
            connection.execute(insert(models).values(**row))
    engine.dispose()


def run_retain(url: str) -> dict[str, Any]:
    from sqlalchemy import delete

    from experiments.simulation.business import BusinessConfig
    from models.bulk import table
    from models.db import make_engine
    from models.risk import score_customers
    from models.risk_tables import RiskScore

    engine = make_engine(url)
    as_of = BusinessConfig().as_of
    start = time.perf_counter()
    version, n = score_customers(engine, as_of)
    seconds = time.perf_counter() - start
    with engine.begin() as connection:
        connection.execute(delete(table(RiskScore)))
    engine.dispose()
    return {"seconds": seconds, "rows": n, "version": version}


def run_bare(url: str) -> dict[str, Any]:
    from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, select

    from experiments.rules import FIELDS
    from experiments.simulation.business import BusinessConfig
    from models.db import make_engine
    from models.features import customer_features
    from models.risk import FEATURES, _live

    engine = make_engine(url)
    as_of = BusinessConfig().as_of
    types = {"string": String, "bool": Boolean}
    features = customer_features(as_of, fields=FEATURES).subquery("features")
    names = [c.name for c in features.c if c.name != "customer_id"]  # the query's order
    staged = Table(
        "bare_features",
        MetaData(),
        Column("customer_id", Integer),
        *(Column(f"f{i}", types.get(FIELDS[f].type, Float)) for i, f in enumerate(names)),
        prefixes=["TEMPORARY"],
    )
    query = select(features).where(_live(as_of, features.c.customer_id))
    with engine.connect() as connection:
        transaction = connection.begin()
        start = time.perf_counter()
        staged.create(connection)
        n = connection.execute(
            staged.insert().from_select([c.name for c in staged.columns], query)
        ).rowcount
        seconds = time.perf_counter() - start
        transaction.rollback()
    engine.dispose()
    return {"seconds": seconds, "rows": n}


def child(mode: str, url: str) -> dict[str, Any]:
    result = run_retain(url) if mode == "retain" else run_bare(url)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(mode: str, url: str) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", mode, "--url", url]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--child", choices=["retain", "bare"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url)))
        return
    from select_assign import seeded_url

    row = trained_model_row()
    for kind in args.databases.split(","):
        url = seeded_url(kind, args.customers)
        install_model(url, row)
        bare = run("bare", url)
        ours = run("retain", url)
        print(
            f"{kind:<10} {args.customers:,} customers, {ours['rows']:,} scored"
            f" (model {ours['version']}):\n"
            f"  retain score {ours['seconds']:.2f} s, peak {ours['peak_mb']:.0f} MB\n"
            f"  bare   feature query INSERT ... SELECT {bare['seconds']:.2f} s"
            f" ({bare['rows']:,} rows), peak {bare['peak_mb']:.0f} MB\n"
            f"  ratio {ours['seconds'] / bare['seconds']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
