"""Evaluation of a large experiment from the database: where does the time go?

Builds an experiment with N assigned customers (default 1,000,000; subscriptions, cards, paid
invoices, cancellations, new cards after assignment), then evaluates it exactly as `retain
evaluate` does and splits the time between the SQL aggregation and the Python statistics.

    .venv/bin/python bench/evaluate_db.py [--customers 1000000] [--database-url URL]

Default database: a fresh SQLite file under bench/out/. For PostgreSQL pass e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/DBNAME (an empty database; it is migrated).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

SPEC = """\
key: big
hypothesis: A reminder helps at scale.
segment: {where: tenure_days >= 0}
arms: [{name: control}, {name: email}, {name: email_sms}]
metrics: {primary: card_updated_14d, secondary: [retained_30d, revenue_90d], guardrails: [unsubscribed_30d]}
"""
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
CHUNK = 50_000


def insert(connection: Any, table: Any, columns: dict[str, list[Any]]) -> None:
    names = list(columns)
    n = len(columns[names[0]])
    for start in range(0, n, CHUNK):
        rows = [
            {name: columns[name][i] for name in names} for i in range(start, min(n, start + CHUNK))
        ]
        connection.execute(table.insert(), rows)


def build(engine: Any, customers: int, seed: int) -> int:
    from experiments.assignment import assign
    from experiments.loader import parse_spec
    from models.bulk import table
    from models.customer_data import Customer, Invoice, PaymentMethod, Subscription
    from models.experiments import register_experiment
    from models.records import Assignment

    rng = np.random.default_rng(seed)
    loaded = parse_spec(SPEC, "big.yaml")
    experiment_id = register_experiment(engine, loaded, T0).experiment_id
    ids = list(range(1, customers + 1))
    external = [f"cus_{i:07d}" for i in ids]
    arms = [a for a, _ in assign("big", external, [("control", 1), ("email", 1), ("email_sms", 1)])]
    created = [T0 - timedelta(days=int(d)) for d in rng.integers(30, 900, customers)]
    with engine.begin() as c:
        insert(c, table(Customer), {
            "id": ids, "external_id": external, "name": ["x"] * customers,
            "email": [f"{e}@example.com" for e in external], "locale": ["en"] * customers,
            "timezone": ["UTC"] * customers, "country": ["US"] * customers,
            "email_consent": [True] * customers, "sms_consent": [False] * customers,
            "created_at": created,
        })  # fmt: skip
        churn = rng.random(customers) < 0.1
        canceled = [
            T0 + timedelta(days=float(d)) if x else None
            for x, d in zip(churn, rng.uniform(0, 90, customers), strict=True)
        ]
        insert(c, table(Subscription), {
            "id": ids, "customer_id": ids, "plan": ["team"] * customers,
            "billing_interval": ["month"] * customers, "mrr_cents": [4900] * customers,
            "status": ["canceled" if x else "active" for x in churn], "started_at": created,
            "current_period_end": [T0 + timedelta(days=10)] * customers, "canceled_at": canceled,
        })  # fmt: skip
        insert(c, table(Assignment), {
            "experiment_id": [experiment_id] * customers, "customer_id": ids, "arm": arms,
            "bucket": [0.5] * customers, "assigned_at": [T0] * customers,
        })  # fmt: skip
        updated = np.flatnonzero(rng.random(customers) < 0.3)
        insert(c, table(PaymentMethod), {
            "customer_id": [ids[i] for i in updated], "last4": ["4242"] * len(updated),
            "exp_month": [1] * len(updated), "exp_year": [2030] * len(updated),
            "expires_on": [date(2030, 1, 31)] * len(updated),
            "created_at": [T0 + timedelta(days=float(d)) for d in rng.uniform(-20, 20, len(updated))],
        })  # fmt: skip
        paid = rng.integers(0, customers, customers)
        insert(c, table(Invoice), {
            "customer_id": [ids[i] for i in paid], "amount_cents": [4900] * customers,
            "status": ["paid"] * customers,
            "due_at": [T0 + timedelta(days=float(d)) for d in rng.uniform(-90, 90, customers)],
            "paid_at": [T0 + timedelta(days=float(d)) for d in rng.uniform(-90, 90, customers)],
        })  # fmt: skip
    return experiment_id


timings: dict[str, float] = {}


@contextmanager
def timed(name: str) -> Any:
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    from sqlalchemy import text

    import models.balance_sql as balance_sql
    import models.evaluation as evaluation
    import models.metric_sql as metric_sql
    import models.survival_sql as survival_sql
    from experiments.loader import parse_spec
    from models.db import make_engine
    from models.migrate import upgrade

    url = args.database_url
    if url is None:
        path = Path("bench/out/evaluate.db")
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("evaluate.db*"):
            stale.unlink()
        url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    start = time.perf_counter()
    experiment_id = build(engine, args.customers, args.seed)
    with engine.begin() as c:
        c.execute(text("ANALYZE"))
    print(
        f"built {args.customers:,} assigned customers in {time.perf_counter() - start:.0f} s ({url.split(':')[0]})"
    )

    # Time every SQL aggregation the evaluation calls, and everything else as Python.
    for module, names in (
        (
            evaluation,
            ["arm_statistics", "paired_statistics", "survival_counts", "covariate_statistics"],
        ),
    ):
        for name in names:
            original = getattr(module, name)

            def wrapper(*a: Any, __original: Any = original, **kw: Any) -> Any:
                with timed("sql"):
                    return __original(*a, **kw)

            setattr(module, name, wrapper)
    # The report's facts beyond the statistics (funnel, lift series, segment inflow, currency).
    original_context = evaluation.report_context

    def context_wrapper(*a: Any, **kw: Any) -> Any:
        with timed("report_facts"):
            return original_context(*a, **kw)

    evaluation.report_context = context_wrapper
    del balance_sql, metric_sql, survival_sql
    spec = parse_spec(SPEC, "big.yaml").spec
    start = time.perf_counter()
    report = evaluation.evaluate(
        engine, experiment_id, spec, T0 + timedelta(days=91), datetime.now(UTC)
    )
    total = time.perf_counter() - start
    sql, facts = timings["sql"], timings.get("report_facts", 0.0)
    print(
        f"evaluate: {total:.1f} s in all; SQL aggregation {sql:.1f} s ({sql / total:.0%}), "
        f"report facts (funnel, lift over time, inflow, currency; SQL) {facts:.1f} s "
        f"({facts / total:.0%}), Python (statistics, report, storing the result) "
        f"{total - sql - facts:.2f} s"
    )
    from experiments.report import write_report

    start = time.perf_counter()
    write_report(report, Path("bench/out/report"))
    print(f"write_report (json, md, html): {time.perf_counter() - start:.2f} s")
    primary = report.metrics[0]
    print(
        "n per arm:",
        {a.name: a.n for a in primary.arms},
        "| lift:",
        {c.arm: round(c.abs_lift or 0, 4) for c in primary.comparisons},
    )


if __name__ == "__main__":
    main()
