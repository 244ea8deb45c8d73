"""``index.html``: every experiment with its state and verdict, linking its latest report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jinja2


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


def render_index(entries: Sequence[IndexEntry], generated_at: str) -> str:
    """The index as one self-contained HTML page (no scripts, autoescaped)."""
    from experiments.report.render import DECISIONS

    template = _TEMPLATE.get_template("index.html.j2")
    return template.render(
        entries=sorted(entries, key=lambda e: e.key), generated_at=generated_at, decisions=DECISIONS
    )
