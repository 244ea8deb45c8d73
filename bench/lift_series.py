"""The report's lift-over-time series from the stored daily aggregates, next to the bare per-customer
GROUP BY a recount of the primary metric needs (what the report did before, plus a day column).

Builds the experiment of ``bench/evaluate_db.py`` (N customers assigned over 120 days), lets the
evaluation's aggregation store the primary metric's final days once, then times
:func:`models.lift_series.stored_series` (one read of the stored sums, cumulated per day) against
the bare query; prints both and their ratio.

    .venv/bin/python bench/lift_series.py [--customers 200000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

from evaluate_db import SPREAD_DAYS, T0, bare_metric, build

METRIC = "card_updated_14d"


def best_of(repeat: int, run: object) -> float:
    assert callable(run)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    from models.bulk import analyze
    from models.daily_aggregates import metric_statistics
    from models.db import make_engine
    from models.lift_series import stored_series
    from models.migrate import upgrade

    url = args.database_url
    if url is None:
        path = Path("bench/out/lift_series.db")
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("lift_series.db*"):
            stale.unlink()
        url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    experiment_id = build(engine, args.customers, args.seed)
    analyze(engine)
    as_of = T0 + timedelta(days=SPREAD_DAYS + 1)
    arms = ["control", "email", "email_sms"]
    metric_statistics(engine, experiment_id, METRIC, as_of, arms)  # stores the final days

    series = stored_series(engine, experiment_id, METRIC, as_of)
    stored = best_of(args.repeat, lambda: stored_series(engine, experiment_id, METRIC, as_of))
    sql = bare_metric(engine.dialect.name, METRIC, 14, experiment_id, as_of.isoformat(" "))

    def recount() -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql).all()

    bare = best_of(args.repeat, recount)
    counted = sum(s.n for s in series.points[-1][1].values()) if series.points else 0
    print(
        f"{args.customers:,} customers ({engine.dialect.name}), {len(series.points)} daily points, "
        f"{counted:,} counted at the last: lift over time from the stored sums {1000 * stored:.1f} ms; "
        f"bare per-customer GROUP BY of {METRIC} {1000 * bare:.1f} ms; "
        f"ratio {stored / bare:.3f}"
    )


if __name__ == "__main__":
    main()
