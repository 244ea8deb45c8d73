"""Select + assign + schedule of the card-expiry example over a large synthetic business, next to
the bare ``INSERT ... SELECT`` of the same rows.

The database is seeded once with N customers (default 1,000,000; kept under bench/out/ or in the
PostgreSQL database ``retain_bench_<N>`` for reruns; ``--history-days 60`` seeds a business with
two months of history, several times faster, which the card segment does not notice much). Then, each in a fresh child process (peak
memory is the child's max RSS):

* ``retain``: what ``retain run`` does for ``experiments/definitions/card-expiry-reminder.yaml``
  at the business's as_of — register, select the segment and assign it (set-based SQL: hash,
  exclusions, assignments, exclusions table), schedule the outbox rows — then the checks
  (sample ratio, balance), timed apart. Its rows are deleted afterwards so the bench can rerun.
* ``bare``: in a transaction that is rolled back, the same feature query into a temporary table,
  then one ``INSERT ... SELECT`` of as many assignment rows (constant arm) and one of as many
  outbox rows: the floor of writing those rows from that selection.

    .venv/bin/python bench/select_assign.py [--customers 1000000] [--databases sqlite,postgresql]
        [--stratify]
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
OUT = ROOT / "bench" / "out"
CARD = ROOT / "experiments" / "definitions" / "card-expiry-reminder.yaml"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _spec(stratify: bool) -> Any:
    from experiments.loader import parse_spec

    text = CARD.read_text()
    if stratify:
        text = text.replace(
            "assignment: {salt: card-expiry-2026q4}",
            "assignment: {salt: card-expiry-2026q4, stratify_by: [subscription.plan]}",
        )
    return parse_spec(text, str(CARD))


def run_retain(url: str, stratify: bool) -> dict[str, Any]:
    from experiments.simulation.business import BusinessConfig
    from models.assign import assign_segment
    from models.assign_checks import run_checks
    from models.assign_schedule import schedule_messages_sql
    from models.db import make_engine
    from models.experiments import register_experiment

    engine = make_engine(url)
    loaded = _spec(stratify)
    as_of = BusinessConfig().as_of
    start = time.perf_counter()
    eid = register_experiment(engine, loaded, as_of).experiment_id
    selected = time.perf_counter()
    run = assign_segment(engine, eid, loaded.spec, as_of, as_of)
    assigned = time.perf_counter()
    scheduled = schedule_messages_sql(engine, eid, loaded.spec, as_of)
    done = time.perf_counter()
    checks = run_checks(engine, eid, loaded.spec, as_of)
    checked = time.perf_counter()
    _clean(engine, eid)
    engine.dispose()
    return {
        "seconds": done - start,
        "assign_seconds": assigned - selected,
        "schedule_seconds": done - assigned,
        "check_seconds": checked - done,
        "segment": run.segment_size,
        "assigned": run.new,
        "excluded": run.excluded,
        "messages": scheduled,
        "srm_p": checks.srm_p_value,
    }


def _clean(engine: Any, eid: int) -> None:
    from sqlalchemy import delete

    from models.assign_records import (
        AssignmentCheck,
        AssignmentExclusion,
        AssignmentStratum,
        LayerAllocation,
    )
    from models.bulk import table
    from models.records import Assignment, Experiment, ExperimentSnapshot, Message

    with engine.begin() as connection:
        for model in (
            Message,
            AssignmentCheck,
            AssignmentExclusion,
            AssignmentStratum,
            LayerAllocation,
            Assignment,
            ExperimentSnapshot,
        ):
            t = table(model)
            connection.execute(delete(t).where(t.c.experiment_id == eid))
        t = table(Experiment)
        connection.execute(delete(t).where(t.c.id == eid))


def run_bare(url: str) -> dict[str, Any]:
    from sqlalchemy import Column, Integer, MetaData, String, Table, func, literal, select

    from experiments.rules import parse_rule
    from experiments.simulation.business import BusinessConfig
    from models.bulk import table
    from models.db import make_engine
    from models.records import Assignment, Experiment, Message
    from models.segments import segment_query

    engine = make_engine(url)
    spec = _spec(False).spec
    as_of = BusinessConfig().as_of
    members = Table(
        "bare_members", MetaData(), Column("customer_id", Integer), prefixes=["TEMPORARY"]
    )
    steps = sum(len(arm.steps) for arm in spec.arms) / len(spec.arms)
    with engine.connect() as connection:
        transaction = connection.begin()
        eid = connection.execute(
            table(Experiment)
            .insert()
            .values(
                key="bare", hypothesis="bare", spec_hash="0", created_at=as_of, updated_at=as_of
            )
        ).inserted_primary_key[0]  # type: ignore[index]
        start = time.perf_counter()
        members.create(connection)
        query = segment_query(parse_rule(spec.segment.where), as_of).subquery()
        connection.execute(
            members.insert().from_select(["customer_id"], select(query.c.customer_id))
        )
        selected = time.perf_counter()
        a, m = table(Assignment), table(Message)
        connection.execute(
            a.insert().from_select(
                ["experiment_id", "customer_id", "arm", "bucket", "assigned_at"],
                select(
                    literal(eid),
                    members.c.customer_id,
                    literal("control"),
                    literal(0.5),
                    literal(as_of, a.c.assigned_at.type),
                ),
            )
        )
        # as many outbox rows as the experiment schedules: the average steps per arm
        n = connection.execute(select(func.count()).select_from(members)).scalar_one()
        rows = int(n * steps)
        source = select(members.c.customer_id, func.row_number().over().label("k")).subquery()
        connection.execute(
            m.insert().from_select(
                [
                    "idempotency_key",
                    "experiment_id",
                    "customer_id",
                    "arm",
                    "step_index",
                    "channel",
                    "template",
                    "scheduled_at",
                    "status",
                    "attempts",
                    "created_at",
                    "updated_at",
                ],
                select(
                    literal("bare:") + func.cast(source.c.k, String),
                    literal(eid),
                    source.c.customer_id,
                    literal("email"),
                    literal(0),
                    literal("email"),
                    literal("card_expiry"),
                    literal(as_of, m.c.scheduled_at.type),
                    literal("pending"),
                    literal(0),
                    literal(as_of, m.c.created_at.type),
                    literal(as_of, m.c.updated_at.type),
                ).limit(rows),
            )
        )
        done = time.perf_counter()
        transaction.rollback()
    engine.dispose()
    return {"seconds": done - start, "select_seconds": selected - start, "rows": n}


def child(mode: str, url: str, stratify: bool) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    result = run_retain(url, stratify) if mode == "retain" else run_bare(url)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def seeded_url(kind: str, customers: int, history_days: int = 365) -> str:
    """A database holding the synthetic business with ``customers`` customers (seeded once)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, func, make_url, select, text

    from experiments.simulation.business import BusinessConfig
    from models.bulk import table
    from models.customer_data import Customer
    from models.db import make_engine
    from models.migrate import upgrade
    from models.seed import seed_business

    if kind == "sqlite":
        OUT.mkdir(parents=True, exist_ok=True)
        suffix = "" if history_days == 365 else f"-h{history_days}"
        url = f"sqlite:///{OUT / f'select-assign-{customers}{suffix}.db'}"
    else:
        name = f"retain_bench_{customers}" + ("" if history_days == 365 else f"_h{history_days}")
        admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as connection:
        have = connection.execute(select(func.count()).select_from(table(Customer))).scalar_one()
    if have == 0:
        started = time.perf_counter()
        seed_business(engine, BusinessConfig(customers=customers, history_days=history_days))
        print(
            f"  seeded {customers:,} customers in {time.perf_counter() - started:.0f} s", flush=True
        )
    elif have != customers:
        raise SystemExit(f"{url} holds {have:,} customers, not {customers:,}; remove it")
    engine.dispose()
    return url


def run(mode: str, url: str, stratify: bool) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", mode, "--url", url]
    out = subprocess.run(
        args + (["--stratify"] if stratify else []), check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--stratify", action="store_true", help="stratify by subscription.plan")
    parser.add_argument(
        "--history-days",
        type=int,
        default=365,
        help="a shorter history seeds faster; the card segment reads cards, invoices and status",
    )
    parser.add_argument("--child", choices=["retain", "bare"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url, args.stratify)))
        return
    for kind in args.databases.split(","):
        url = seeded_url(kind, args.customers, args.history_days)
        bare = run("bare", url, args.stratify)
        ours = run("retain", url, args.stratify)
        print(
            f"{kind:<10} {args.customers:,} customers, segment {ours['segment']:,}"
            f" ({ours['assigned']:,} assigned, excluded {ours['excluded']},"
            f" {ours['messages']:,} messages):\n"
            f"  retain select+assign {ours['assign_seconds']:.2f} s + schedule"
            f" {ours['schedule_seconds']:.2f} s = {ours['seconds']:.2f} s,"
            f" peak {ours['peak_mb']:.0f} MB; checks {ours['check_seconds']:.2f} s\n"
            f"  bare   feature query {bare['select_seconds']:.2f} s + INSERT ... SELECT ="
            f" {bare['seconds']:.2f} s, peak {bare['peak_mb']:.0f} MB\n"
            f"  ratio {ours['seconds'] / bare['seconds']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
