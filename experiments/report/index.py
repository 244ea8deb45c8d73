"""``index.html``: every experiment with its state and verdict, linking its latest report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jinja2

from experiments.report.models import HoldoutComparison


@dataclass(frozen=True)
class IndexEntry:
    """One experiment on the index page. ``href`` is relative to the index; ``error`` says why
    there is no report (nothing assigned yet, say)."""

    key: str
    state: str
    hypothesis: str
    decision: str | None = None
    verdict: str | None = None
    as_of: str | None = None
    href: str | None = None
    error: str | None = None


_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("experiments.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_index(
    entries: Sequence[IndexEntry],
    generated_at: str,
    programme: HoldoutComparison | None = None,
    currency: str = "USD",
) -> str:
    """The index as one self-contained HTML page (no scripts, autoescaped), with the whole
    programme's treated customers against the global holdout when any experiment has one."""
    from experiments.report.numbers import fmt_count, fmt_lift_text, is_money
    from experiments.report.render import _STATUS_NOTES, DECISIONS, fmt_p, metric_mean

    template = _TEMPLATE.get_template("index.html.j2")
    return template.render(
        entries=sorted(entries, key=lambda e: e.key),
        generated_at=generated_at,
        decisions=DECISIONS,
        programme=programme,
        money=lambda name: currency if is_money(name) else None,
        metric_mean=metric_mean,
        lift_ci=fmt_lift_text,
        fmt_count=fmt_count,
        fmt_p=fmt_p,
        status_notes=_STATUS_NOTES,
    )
