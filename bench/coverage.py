"""Coverage of the demo's 95% CIs over the planted true effects, across seeds.

Runs the whole demo (seeding, real Prefect flows, dispatch, simulated outcomes, evaluation) once per
seed and counts how often each comparison's 95% CI contains the planted effect. With honest
estimates and a correct truth, about 95% of intervals cover.

    .venv/bin/python bench/coverage.py [--seeds 20] [--customers 20000] [--out bench/out/coverage]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("bench/out/coverage"))
    args = parser.parse_args()

    from scipy.stats import binomtest

    from flows.demo import DemoConfig, run_demo

    covered = 0
    total = 0
    no_ci = 0
    by_metric: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        started = time.monotonic()
        result = run_demo(
            DemoConfig(out_dir=args.out / f"seed-{seed}", customers=args.customers, seed=seed),
            log=lambda _line: None,
        )
        seed_covered = seed_total = 0
        for key, report in result.reports.items():
            for metric in report.metrics:
                for c in metric.comparisons:
                    if c.planted_abs_lift is None:
                        continue
                    if c.abs_ci is None:
                        no_ci += 1
                        continue
                    hit = c.abs_ci[0] <= c.planted_abs_lift <= c.abs_ci[1]
                    covered += hit
                    total += 1
                    seed_covered += hit
                    seed_total += 1
                    by_metric[metric.name][0] += hit
                    by_metric[metric.name][1] += 1
                    rows.append(
                        {
                            "seed": seed,
                            "experiment": key,
                            "metric": metric.name,
                            "arm": c.arm,
                            "estimate": c.abs_lift,
                            "ci": c.abs_ci,
                            "planted": c.planted_abs_lift,
                            "covered": hit,
                        }
                    )
        print(
            f"seed {seed:3d}: {seed_covered}/{seed_total} intervals cover the planted effect "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    ci = binomtest(covered, total).proportion_ci(0.95)
    print(
        f"\ncoverage: {covered}/{total} = {covered / total:.3f} (95% CI {ci.low:.3f}-{ci.high:.3f})"
    )
    for name, (hits, n) in sorted(by_metric.items()):
        print(f"  {name:26s} {hits:4d}/{n:<4d} = {hits / n:.3f}")
    if no_ci:
        print(f"  ({no_ci} comparisons had no CI: a degenerate status)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(
        json.dumps({"covered": covered, "total": total, "rows": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
