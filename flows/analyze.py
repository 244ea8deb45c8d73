"""``retain analyze``: bring in an experiment that ran elsewhere, from a CSV of one row per unit.

It analyses a finished experiment, so the headline p-values and CIs are fixed-horizon ones (the
sequential and Bayesian results are in the report too). No database and no Prefect run are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from experiments.analysis import AnalysisSettings, MetricInput, build_report
from experiments.csvdata import CsvExperiment, MetricSpec, read_experiment_csv
from experiments.report import write_report
from experiments.report.models import Report


def analyze_csv(
    path: Path,
    arm_column: str,
    baseline: str,
    metrics: Sequence[MetricSpec],
    out_dir: Path,
    weights: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
) -> tuple[CsvExperiment, Report]:
    """Read the CSV, analyse every metric (the first is primary) and write the three reports.

    ``weights`` are the planned arm weights for the sample-ratio check (default: equal); an arm
    missing from the data or a weight for an unknown arm is a ValueError."""
    data = read_experiment_csv(path, arm_column, baseline, metrics)
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(data.arms))
    if unknown:
        raise ValueError(
            f"--weight names arms not in {path}: {unknown}; arms are {list(data.arms)}"
        )
    arm_weights = {arm: float(weights.get(arm, 1.0)) for arm in data.arms}
    now = datetime.now(UTC)
    report = build_report(
        experiment=path.stem,
        hypothesis=f"Imported from {path.name}: {len(data.arms)} arms, {data.rows:,} units.",
        computed_at=now,
        as_of=now,
        alpha=alpha,
        baseline=baseline,
        arm_weights=arm_weights,
        metrics=[
            MetricInput(
                name=m.name,
                kind=m.kind,
                role="primary" if i == 0 else "secondary",
                description=f"column {m.name!r} of {path.name} ({m.kind})",
                arm_stats=data.stats[m.name],
            )
            for i, m in enumerate(metrics)
        ],
        settings=AnalysisSettings(method="fixed", correction=correction),  # type: ignore[arg-type]
    )
    write_report(report, out_dir)
    return data, report
