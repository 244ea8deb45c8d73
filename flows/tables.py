"""Terminal tables of a report (rich)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from experiments.report.models import Report
from experiments.report.render import chance_to_beat
from flows.console import safe


def _lift(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    return f"{value * 100:+.2f}pp" if kind == "binary" else f"{value:+.2f}"


def _mean(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.2f}%" if kind == "binary" else f"{value:.2f}"


def report_table(report: Report) -> Table:
    """One row per metric and arm: n, estimate, lift vs the baseline with its fixed-horizon 95% CI,
    the raw p-value, the headline p-value adjusted for multiple comparisons (sequential or fixed,
    per the analysis), the Bayesian chance to be better than the baseline (lower is better for
    guardrails such as unsubscribes), and the planted true lift when known (binary metrics in
    percent, lifts in percentage points, with more decimals than the report so they can be read
    against the planted effects)."""
    srm = "ok" if report.srm.ok else "[bold red]SAMPLE RATIO MISMATCH[/bold red]"
    table = Table(
        title=(
            f"[bold]{safe(report.experiment)}[/bold]  baseline: {safe(report.baseline)}; "
            f"sample ratio p={report.srm.p_value:.3f} {srm}"
            + (
                f"; headline: {report.analysis.method}, {report.analysis.correction} correction"
                if report.analysis
                else ""
            )
        ),
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("arm")
    for column in ("n", "estimate", "lift", "95% CI", "p", "p adj.", "P(beat)", "planted"):
        table.add_column(column, justify="right", no_wrap=True)
    for metric in report.metrics:
        comparisons = {c.arm: c for c in metric.comparisons}
        for i, arm in enumerate(metric.arms):
            label = safe(metric.name) if i == 0 else f"[dim]{metric.role}[/dim]" if i == 1 else ""
            c = comparisons.get(arm.name)
            if c is None:
                table.add_row(label, safe(arm.name), f"{arm.n:,}", _mean(arm.mean, metric.kind))
                continue
            ci = "–"
            if c.abs_ci is not None:
                ci = f"[{_lift(c.abs_ci[0], metric.kind)}, {_lift(c.abs_ci[1], metric.kind)}]"
            table.add_row(
                label,
                safe(arm.name),
                f"{arm.n:,}",
                _mean(arm.mean, metric.kind),
                _lift(c.abs_lift, metric.kind),
                ci,
                "–" if c.p_value is None else f"{c.p_value:.4f}",
                "–" if c.p_value_adjusted is None else f"{c.p_value_adjusted:.4f}",
                "–" if (beat := chance_to_beat(metric, c)) is None else f"{beat:.0%}",
                "" if c.planted_abs_lift is None else _lift(c.planted_abs_lift, metric.kind),
            )
        table.add_section()
    if report.verdict is not None:
        table.caption = escape(report.verdict.text)
        table.caption_justify = "left"
    return table
