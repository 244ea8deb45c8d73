"""The experiment report: the ``report.json`` contract (:mod:`.models`), its rendering for people
(:mod:`.render`, with the Jinja2 templates in ``templates/``) and its SVG charts (:mod:`.charts`).

:func:`experiments.analysis.build_report` fills the contract; this package only reads it.
"""

from experiments.report.models import Report
from experiments.report.render import render_html, render_markdown, write_report

__all__ = ["Report", "render_html", "render_markdown", "write_report"]
