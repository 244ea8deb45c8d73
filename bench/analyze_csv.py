"""Speed of reading an experiment CSV (the data side of ``retain analyze``) and of the comparisons.

Writes a seeded CSV in a temporary directory (default 1,000,000 rows, 3 arms; ``converted`` spelled
true/False/1/0/yes/no, ``revenue`` a float), then times ``read_experiment_csv`` (best of
``--repeat`` runs, each printed) and ``experiments.stats.compare`` on its result. Prints figures
only; nothing here asserts on time.

    .venv/bin/python bench/analyze_csv.py [--rows 1000000] [--seed 1] [--repeat 3] [--crlf]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = ("control", "email", "email_sms")
TRUE = ("true", "1", "yes", "True", "YES")
FALSE = ("False", "0", "no", "false", "0")


def write_csv(path: Path, rows: int, seed: int, newline: str) -> None:
    """A seeded one-row-per-unit file: arm, converted (mixed spellings), revenue."""
    rng = np.random.default_rng(seed)
    arm_index = rng.integers(0, len(ARMS), rows)
    converted = rng.random(rows) < np.array([0.20, 0.22, 0.23])[arm_index]
    spelled = np.where(
        converted,
        np.array(TRUE)[rng.integers(0, len(TRUE), rows)],
        np.array(FALSE)[rng.integers(0, len(FALSE), rows)],
    )
    revenue = np.round(rng.gamma(2.0, 20.0, rows) * converted, 2)
    arm = np.array(ARMS)[arm_index]
    lines = [
        f"{a},{c},{r}"
        for a, c, r in zip(arm.tolist(), spelled.tolist(), revenue.tolist(), strict=True)
    ]
    path.write_text(newline.join(["arm,converted,revenue", *lines]) + newline, newline="")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crlf", action="store_true", help="end lines with \\r\\n")
    args = parser.parse_args()

    start = time.perf_counter()
    from experiments.csvdata import MetricSpec, read_experiment_csv
    from experiments.stats import compare

    print(
        f"import experiments.csvdata + stats (pandas, scipy): {time.perf_counter() - start:.2f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment.csv"
        start = time.perf_counter()
        write_csv(path, args.rows, args.seed, "\r\n" if args.crlf else "\n")
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {args.rows:,} rows, {size_mb:.1f} MB in {time.perf_counter() - start:.2f} s")

        metrics = [MetricSpec("converted", "binary"), MetricSpec("revenue", "continuous")]
        timings = []
        for run in range(1, args.repeat + 1):
            start = time.perf_counter()
            result = read_experiment_csv(path, "arm", "control", metrics)
            seconds = time.perf_counter() - start
            timings.append(seconds)
            print(
                f"read_experiment_csv run {run}: {seconds:.3f} s, "
                f"{result.rows / seconds:,.0f} rows/s"
            )
        best = min(timings)
        print(f"read_experiment_csv best: {best:.3f} s, {result.rows / best:,.0f} rows/s")

        # The whole command as a user runs it: process start, imports, read, every method, the
        # three report files.
        command = [
            str(Path(sys.executable).with_name("retain")),
            "analyze", str(path), "--arm-column", "arm", "--baseline", "control",
            "--metric", "converted:binary", "--metric", "revenue:continuous",
            "--out", str(Path(tmp) / "report"),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        print(f"retain analyze (whole command, 1 run): {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    comparisons = 0
    for metric in metrics:
        baseline = result.stats[metric.name]["control"]
        for arm in result.arms[1:]:
            outcome = compare(metric.kind, result.stats[metric.name][arm], baseline)
            comparisons += 1
            print(
                f"  {metric.name:<9} {arm:<9} vs control: lift {outcome.abs_lift:+.5f}, "
                f"p = {outcome.p_value:.3g} ({outcome.method})"
            )
    seconds = time.perf_counter() - start
    print(f"compare: {comparisons} comparisons in {seconds * 1000:.2f} ms")


if __name__ == "__main__":
    main()
