"""Terminal tables of a report (rich)."""

from __future__ import annotations

from rich.table import Table

from experiments.report import Report


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    return f"{value * 100:+.2f} pp" if kind == "binary" else f"{value:+.2f}"


def _mean(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.2f}%" if kind == "binary" else f"{value:.2f}"


def report_table(report: Report) -> Table:
    """One row per metric and arm: n, estimate, lift vs baseline with its 95% CI, p-value and the
    planted true lift when known (binary lifts in percentage points)."""
    srm = "ok" if report.srm.ok else "[red]SAMPLE RATIO MISMATCH[/red]"
    table = Table(
        title=f"{report.experiment}  (baseline {report.baseline}; SRM p={report.srm.p_value:.3f} {srm})",
        title_justify="left",
    )
    for column in (
        "metric",
        "arm",
        "n",
        "estimate",
        "lift vs baseline",
        "95% CI",
        "p-value",
        "planted lift",
    ):
        table.add_column(column, justify="left" if column in ("metric", "arm") else "right")
    for metric in report.metrics:
        comparisons = {c.arm: c for c in metric.comparisons}
        for arm in metric.arms:
            c = comparisons.get(arm.name)
            ci = "–"
            if c is not None and c.abs_ci is not None:
                ci = f"[{_fmt(c.abs_ci[0], metric.kind)}, {_fmt(c.abs_ci[1], metric.kind)}]"
            table.add_row(
                f"{metric.name} ({metric.role})" if arm.name == report.baseline else "",
                arm.name,
                f"{arm.n:,}",
                _mean(arm.mean, metric.kind),
                _fmt(c.abs_lift, metric.kind) if c else "",
                ci if c else "",
                (f"{c.p_value:.4f}" if c.p_value is not None else "–") if c else "",
                _fmt(c.planted_abs_lift, metric.kind)
                if c and c.planted_abs_lift is not None
                else "",
            )
        table.add_section()
    return table
