"""Prefect artifacts of an evaluation, so the result sits next to the run in the Prefect UI: a
Markdown summary (the primary metric's verdict and table), a table of every arm and metric, and a
link to the HTML report. Artifact keys are lowercase with dashes (Prefect's rule)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from experiments.report import Report


def artifact_key(experiment: str, kind: str) -> str:
    """``retain-<experiment>-<kind>`` with every character Prefect does not allow made a dash."""
    return re.sub(r"[^a-z0-9-]+", "-", f"retain-{experiment}-{kind}".lower()).strip("-")


def _number(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One row per metric and arm: n and mean for every arm; lift, CI and the headline p-value
    (adjusted for multiple comparisons) for every arm compared with the baseline."""
    rows: list[dict[str, Any]] = []
    for metric in report.metrics:
        comparisons = {c.arm: c for c in metric.comparisons}
        for arm in metric.arms:
            c = comparisons.get(arm.name)
            rows.append(
                {
                    "metric": metric.name,
                    "role": metric.role,
                    "arm": arm.name,
                    "n": arm.n,
                    "mean": _number(arm.mean),
                    "abs_lift": _number(c.abs_lift) if c else None,
                    "ci_low": _number(c.abs_ci[0]) if c and c.abs_ci else None,
                    "ci_high": _number(c.abs_ci[1]) if c and c.abs_ci else None,
                    "p_headline": _number(
                        c.p_value_adjusted if c.p_value_adjusted is not None else c.p_value
                    )
                    if c
                    else None,
                    "significant": c.significant if c else None,
                }
            )
    return rows


def summary_markdown(report: Report) -> str:
    """The primary metric's verdict line and arm table, in Markdown."""
    primary = next((m for m in report.metrics if m.role == "primary"), report.metrics[0])
    winners = [c for c in primary.comparisons if c.significant and c.abs_lift is not None]
    if winners:
        verdict = "; ".join(
            f"**{c.arm}** differs from {c.baseline}: {c.abs_lift:+.4g}" for c in winners
        )
    else:
        verdict = f"No arm differs significantly from **{report.baseline}** on {primary.name} yet."
    srm = "ok" if report.srm.ok else f"**sample ratio mismatch** (p={report.srm.p_value:.2g})"
    lines = [
        f"# {report.experiment}: {primary.name}",
        "",
        verdict,
        "",
        f"As of {report.as_of}; sample ratio {srm}.",
        "",
        "| arm | n | mean | lift | 95% CI | p (headline) |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in table_rows(report):
        if row["metric"] != primary.name:
            continue
        ci = f"{row['ci_low']:+.4g} to {row['ci_high']:+.4g}" if row["ci_low"] is not None else "–"
        lift = f"{row['abs_lift']:+.4g}" if row["abs_lift"] is not None else "baseline"
        p = f"{row['p_headline']:.3g}" if row["p_headline"] is not None else "–"
        name = row["arm"].replace("|", "\\|")
        lines.append(f"| {name} | {row['n']:,} | {row['mean']:.4g} | {lift} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def publish(report: Report, report_dir: Path) -> list[str]:
    """Create the three artifacts in the current flow run; returns their keys."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    keys = [
        artifact_key(report.experiment, "summary"),
        artifact_key(report.experiment, "table"),
        artifact_key(report.experiment, "report"),
    ]
    create_markdown_artifact(
        summary_markdown(report), key=keys[0], description=f"{report.experiment}: verdict"
    )
    create_table_artifact(
        table_rows(report), key=keys[1], description=f"{report.experiment}: arms and metrics"
    )
    html = (report_dir / "report.html").resolve()
    create_link_artifact(
        html.as_uri(), link_text="report.html", key=keys[2], description="the full report"
    )
    return keys
