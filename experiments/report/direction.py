"""How to read a comparison: the metric's good direction (from the catalogue), the headline
method's interval and p-value, and which arms won or did harm. Every reading of significance in the
report goes through here, so the verdict, the headline and the tables agree."""

from __future__ import annotations

from collections.abc import Set

from experiments.metrics import CATALOGUE
from experiments.report.models import Comparison, Interval, MetricReport, Report


def lower_is_better(metric: MetricReport) -> bool:
    """Whether a decrease of ``metric`` is the good direction (``higher_is_better`` in the metric
    catalogue; metrics outside it, such as those of ``retain analyze``, are higher-is-better)."""
    definition = CATALOGUE.get(metric.name)
    return definition is not None and not definition.higher_is_better


def headline_ci(c: Comparison) -> Interval | None:
    """The absolute CI of the headline method: always-valid for sequential, else fixed."""
    if c.headline == "sequential":
        return c.sequential.abs_ci if c.sequential is not None else None
    return c.abs_ci


def headline_rel_ci(c: Comparison) -> Interval | None:
    """The relative CI of the headline method."""
    if c.headline == "sequential":
        return c.sequential.rel_ci if c.sequential is not None else None
    return c.rel_ci


def secondary_ci(c: Comparison) -> Interval | None:
    """The absolute CI of the other method (shown labelled, in a secondary place)."""
    if c.headline == "sequential":
        return c.abs_ci
    return c.sequential.abs_ci if c.sequential is not None else None


def excludes_zero(ci: Interval | None) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def tone(metric: MetricReport, c: Comparison) -> str:
    """``"good"`` or ``"bad"`` for a significant move (by the headline method, after the
    correction) in the metric's good or bad direction, ``"flat"`` otherwise."""
    if not c.significant or not c.abs_lift:
        return "flat"
    return "bad" if (c.abs_lift > 0) == lower_is_better(metric) else "good"


def best_arm(metric: MetricReport, exclude: Set[str] = frozenset()) -> Comparison | None:
    """The comparison with the largest significant move in the metric's good direction, among
    the arms not in ``exclude``."""
    winners = [c for c in metric.comparisons if tone(metric, c) == "good" and c.arm not in exclude]
    return max(winners, key=lambda c: abs(c.abs_lift or 0), default=None)


def guardrail_warnings(report: Report) -> list[tuple[MetricReport, Comparison]]:
    """Guardrail comparisons that moved significantly in the bad direction."""
    return [
        (m, c)
        for m in report.metrics
        if m.role == "guardrail"
        for c in m.comparisons
        if tone(m, c) == "bad"
    ]


def primary_metric(report: Report) -> MetricReport | None:
    """The report's primary metric (None only for a hand-made report without one)."""
    return next((m for m in report.metrics if m.role == "primary"), None)
