"""The experiment report rendered for people: Markdown and one self-contained HTML page.

The contract is in :mod:`experiments.report.models`; :func:`experiments.analysis.build_report`
fills it. ``write_report`` writes ``report.json``, ``report.md`` and
``report.html``. Templates live in ``experiments/report/templates`` and are rendered with jinja2
(HTML autoescaped); the helpers below turn numbers into the words and SVG geometry they show.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from experiments.report.charts import KmChart, KmSeries, km_chart, share_after, survival_checkpoints
from experiments.report.direction import (
    best_arm,
    excludes_zero,
    guardrail_warnings,
    headline_ci,
    headline_rel_ci,
    lower_is_better,
    primary_metric,
    secondary_ci,
    tone,
)
from experiments.report.lift_chart import ci_bars, lift_chart
from experiments.report.models import (
    Comparison,
    LiftOverTime,
    MetricReport,
    Report,
    StratumSrm,
    Trust,
    Verdict,
)
from experiments.report.numbers import fmt_count, fmt_lift_text, fmt_money, is_money
from experiments.report.verdict import decide

__all__ = [
    "KmChart",
    "KmSeries",
    "km_chart",
    "render_html",
    "render_markdown",
    "share_after",
    "survival_checkpoints",
    "write_report",
]

# --- formatting shared by both renderings -------------------------------------------------------

_DASH = "—"
_STATUS_NOTES: dict[str, str] = {
    "ok": "",
    "n_too_small": "too few customers to compare yet (at least 2 per arm are needed)",
    "zero_variance": "every customer in both arms has the same value, so no test is possible yet",
    "zero_baseline": "the baseline is 0, so the relative lift is undefined",
    "negative_baseline": "the baseline is negative, so the relative lift is undefined",
    "rel_ci_undefined": "the relative lift has no interval (no spread in the treatment arm)",
    "out_of_range": "the values are too large to compute every number in float64",
    "horizon_beyond_follow_up": "not every arm has been followed up to the horizon yet",
    "no_events": "nobody has churned yet",
    "no_information": "no day had churn while two arms were still followed",
    "reduced_df": "some arm carries no information, so only the others are compared",
}
_CORRECTIONS = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no"}
_OMNIBUS = {
    "chi_square_independence": ("chi-square test", "chi-square"),
    "welch_anova": ("Welch's ANOVA", "F"),
}


def fmt_mean(value: float | None, kind: str) -> str:
    """An arm's mean: a percentage for binary metrics, 2 decimals for continuous ones."""
    if value is None:
        return _DASH
    return f"{100 * value:.1f}%" if kind == "binary" else f"{value:,.2f}"


def fmt_lift(value: float | None, kind: str) -> str:
    """An absolute lift: percentage points for binary metrics, 2 decimals for continuous ones."""
    if value is None:
        return _DASH
    return f"{100 * value:+.2f} pp" if kind == "binary" else f"{value:+,.2f}"


def fmt_amount(value: float | None, kind: str) -> str:
    """An unsigned amount in the units of :func:`fmt_lift` (``< 0.01`` when it rounds to 0)."""
    if value is None:
        return _DASH
    shown, unit = (100 * value, " pp") if kind == "binary" else (value, "")
    return f"< 0.01{unit}" if 0 < shown < 0.005 else f"{shown:,.2f}{unit}"


def fmt_ci(ci: Sequence[float] | None, kind: str) -> str:
    """An absolute CI in the units of :func:`fmt_lift`."""
    if ci is None:
        return _DASH
    if kind == "binary":
        return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] pp"
    return f"[{ci[0]:+,.2f}, {ci[1]:+,.2f}]"


def fmt_lift_ci(value: float | None, ci: Sequence[float] | None, kind: str) -> str:
    """An absolute lift followed by its CI, unit once at the end: ``+2.87 [+0.09, +5.65] pp``."""
    if value is None or ci is None:
        return fmt_lift(value, kind)
    if kind == "binary":
        return f"{100 * value:+.2f} {fmt_ci(ci, kind)}"
    return f"{value:+,.2f} {fmt_ci(ci, kind)}"


def fmt_rel_ci(value: float | None, ci: Sequence[float] | None) -> str:
    """A relative lift in percent followed by its CI when there is one."""
    if value is None:
        return _DASH
    text = f"{100 * value:+.1f}%"
    return text if ci is None else f"{text} [{100 * ci[0]:+.1f}%, {100 * ci[1]:+.1f}%]"


def fmt_share(value: float | None) -> str:
    """A probability or share as a percentage with one decimal (never a rounded 0% or 100%)."""
    if value is None:
        return _DASH
    if value > 0.999:
        return "> 99.9%"
    return "< 0.1%" if value < 0.001 else f"{100 * value:.1f}%"


def fmt_p(value: float | None) -> str:
    """A p-value for tables: 3 decimals, ``< 0.001`` below that."""
    if value is None:
        return _DASH
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def fmt_p_clause(value: float | None) -> str:
    """``p = 0.043``, ``p < 0.001`` or ``no p-value``, for sentences."""
    if value is None:
        return "no p-value"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def planted_coverage(c: Comparison) -> str:
    """``inside CI`` or ``outside CI`` for the planted effect; empty without one or a CI."""
    if c.planted_abs_lift is None or c.abs_ci is None:
        return ""
    inside = c.abs_ci[0] <= c.planted_abs_lift <= c.abs_ci[1]
    return "inside CI" if inside else "outside CI"


def planted_note(c: Comparison, kind: str) -> str:
    """The planted (true) effect and whether the CI covers it; empty when nothing was planted."""
    if c.planted_abs_lift is None:
        return ""
    coverage = planted_coverage(c)
    text = fmt_lift(c.planted_abs_lift, kind)
    return f"{text} ({coverage})" if coverage else text


# --- what the numbers mean ----------------------------------------------------------------------


def verdict(c: Comparison, metric: MetricReport | None = None) -> str:
    """A plain-English verdict for one comparison; a move in the bad direction of ``metric``
    (an increase of unsubscribes, say) reads as a warning, never as a win."""
    if c.status in ("n_too_small", "zero_variance"):
        return f"no verdict: {_STATUS_NOTES[c.status]}"
    if c.significant and c.abs_lift:
        text = f"significantly {'higher' if c.abs_lift > 0 else 'lower'} than {c.baseline}"
        if metric is not None and tone(metric, c) == "bad":
            better = "lower" if lower_is_better(metric) else "higher"
            return f"warning: {text} ({better} is better)"
        return text
    return f"no significant difference from {c.baseline}"


def ci_name(c: Comparison, alpha: float) -> str:
    """``always-valid 95% CI`` for a sequential headline, ``95% CI`` for a fixed one."""
    label = _ci_label(alpha)
    return f"always-valid {label}" if c.headline == "sequential" else label


def correction_name(correction: str) -> str:
    """``Holm``, ``Benjamini–Hochberg`` or ``no``, as in "Holm correction"."""
    return _CORRECTIONS.get(correction, correction)


def adjusted_p_clause(c: Comparison) -> str:
    """The p-value that decides ``significant``, and how it was adjusted, for sentences."""
    if c.correction == "none":
        return f"{fmt_p_clause(c.p_value_adjusted)} (no correction for multiple comparisons)"
    clause = fmt_p_clause(c.p_value_adjusted)
    return f"adjusted {clause} ({correction_name(c.correction)} correction)"


def chance_to_beat(metric: MetricReport, c: Comparison) -> float | None:
    """P(arm is better than the baseline): ``P(T > B)``, or ``1 - P(T > B)`` when lower is better
    (the posteriors are continuous, so ties have probability 0)."""
    b = c.bayes
    if b is None or b.chance_to_beat is None:
        return None
    return 1 - b.chance_to_beat if lower_is_better(metric) else b.chance_to_beat


def expected_loss(metric: MetricReport, c: Comparison) -> float | None:
    """Risk of shipping the arm, the expected loss if it is in fact worse: ``E[max(B - T, 0)]``,
    or ``E[max(T - B, 0)]`` (the summary's ``risk_baseline``) when lower is better."""
    if c.bayes is None:
        return None
    return c.bayes.risk_baseline if lower_is_better(metric) else c.bayes.risk


def cuped_note(metric: MetricReport) -> str:
    """``variance reduced by N% using pre-period data`` when CUPED was applied, else empty."""
    for c in metric.comparisons:
        cu = c.cuped
        if cu is not None and cu.applied and cu.variance_reduction is not None:
            share = 100 * cu.variance_reduction
            amount = f"{share:.0f}%" if share >= 0.5 else "less than 1%"
            return f"variance reduced by {amount} using pre-period data"
    return ""


def fisher_arms(metric: MetricReport) -> list[str]:
    """Arms whose p-value comes from Fisher's exact test (few conversions)."""
    return [c.arm for c in metric.comparisons if c.method == "fisher_exact"]


def omnibus_sentence(metric: MetricReport) -> str:
    """Whether the arms differ at all (k >= 3 arms); empty when there is no omnibus test."""
    o = metric.omnibus
    if o is None:
        return ""
    name, symbol = _OMNIBUS.get(o.method, (o.method, "statistic"))
    question = f"Do the {len(metric.arms)} arms differ at all? {name}"
    if o.statistic is None:
        return f"{question}: not computed ({_STATUS_NOTES.get(o.status, o.status)})."
    return f"{question}: {symbol} = {o.statistic:.2f} on {o.df} df, {fmt_p_clause(o.p_value)}."


def arm_mean(metric: MetricReport, arm: str) -> float | None:
    """The mean of ``arm`` on ``metric``."""
    return next((a.mean for a in metric.arms if a.name == arm), None)


def any_planted(metrics: Sequence[MetricReport]) -> bool:
    """Whether any comparison of these metrics carries a planted (true) effect."""
    return any(c.planted_abs_lift is not None for m in metrics for c in m.comparisons)


def prior_text(priors: dict[str, float | None]) -> str:
    """The Bayesian priors in words."""
    beta = f"Beta({priors.get('beta_alpha'):g}, {priors.get('beta_beta'):g})"
    variance = priors.get("normal_variance")
    normal = (
        "a flat prior"
        if variance is None
        else f"a normal prior with mean {priors.get('normal_mean'):g} and variance {variance:g}"
    )
    return f"{beta} on each arm's rate for binary metrics, {normal} on the difference otherwise"


# --- the verdict, trust badges and headline-consistent tables ---------------------------------

DECISIONS = {
    "ship": "Ship",
    "stop_arm": "Stop arm",
    "no_difference_yet": "Keep running",
    "no_difference": "No difference",
    "hold": "Hold",
}
BADGES = {"green": "OK", "amber": "Check", "red": "Problem"}


def money_unit(report: Report, metric: str) -> str | None:
    """The currency of ``metric`` when it is money (from the customers' data, USD by default)."""
    return (report.currency or "USD") if is_money(metric) else None


def metric_mean(value: float | None, kind: str, money: str | None) -> str:
    """An arm's mean: a percentage, an amount of money or a plain number."""
    if money is not None and kind != "binary":
        return fmt_money(value, money)
    return fmt_mean(value, kind)


def significance(metric: MetricReport, c: Comparison) -> str:
    """The significance cell, by the headline method after the correction. A headline CI that
    excludes 0 without significance is explained (the correction for multiple comparisons), never
    left to contradict the row."""
    if c.significant:
        return "yes, warning" if tone(metric, c) == "bad" and metric.role == "guardrail" else "yes"
    if excludes_zero(headline_ci(c)) and c.correction != "none":
        return f"no, after the {correction_name(c.correction)} correction"
    return "no"


def timeline_days(timeline: LiftOverTime, most: int = 12) -> list[int]:
    """The days the Markdown table lists: at most ``most``, evenly spread, always the last."""
    days = sorted({p.day for s in timeline.arms for p in s.points})
    if len(days) <= most:
        return days
    step = (len(days) - 1) / (most - 1)
    return sorted({days[round(i * step)] for i in range(most)})


def strata_rows(trust: Trust, most: int = 20) -> list[StratumSrm]:
    """The per-stratum sample-ratio rows to show: at most ``most``, least balanced first."""
    return sorted(
        trust.srm_strata, key=lambda s: (s.ok, s.p_value if s.p_value is not None else 1.0)
    )[:most]


def fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in ``text``."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


# --- rendering ----------------------------------------------------------------------------------


def _md_text(value: object) -> str:
    """Free text for Markdown: HTML-escaped (renderers pass raw HTML through) and safe in tables."""
    return html.escape(str(value)).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ci_label(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}% CI"


def _when(iso: str) -> str:
    """An ISO timestamp as people read it: ``2026-11-21 06:08 UTC``."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _smd(value: float | None) -> str:
    return _DASH if value is None else f"{value:+.2f}"


@functools.cache
def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("experiments.report", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        mean=fmt_mean,
        lift=fmt_lift,
        amount=fmt_amount,
        ci=fmt_ci,
        share=fmt_share,
        p=fmt_p,
        p_clause=fmt_p_clause,
        smd=_smd,
        md=_md_text,
        when=_when,
    )
    env.globals.update(
        lift_ci=fmt_lift_text,
        timeline_days=timeline_days,
        strata_rows=strata_rows,
        fence=fence,
        old_lift_ci=fmt_lift_ci,
        headline_rel_ci=headline_rel_ci,
        secondary_ci=secondary_ci,
        money_unit=money_unit,
        metric_mean=metric_mean,
        significance=significance,
        decisions=DECISIONS,
        badges=BADGES,
        lift_chart=lift_chart,
        fmt_count=fmt_count,
        fmt_money=fmt_money,
        rel_ci=fmt_rel_ci,
        verdict=verdict,
        tone=tone,
        planted_note=planted_note,
        planted_coverage=planted_coverage,
        arm_mean=arm_mean,
        best_arm=best_arm,
        guardrail_warnings=guardrail_warnings,
        headline_ci=headline_ci,
        ci_name=ci_name,
        correction_name=correction_name,
        adjusted_p_clause=adjusted_p_clause,
        chance_to_beat=chance_to_beat,
        expected_loss=expected_loss,
        cuped_note=cuped_note,
        fisher_arms=fisher_arms,
        omnibus_sentence=omnibus_sentence,
        lower_is_better=lower_is_better,
        prior_text=prior_text,
        any_planted=any_planted,
        ci_bars=ci_bars,
        km_chart=km_chart,
        share_after=share_after,
        survival_checkpoints=survival_checkpoints,
        ci_label=_ci_label,
        status_notes=_STATUS_NOTES,
    )
    return env


def verdict_of(report: Report) -> Verdict | None:
    """The report's verdict; one without planning facts for a report built without them (``retain
    analyze``, a hand-made report)."""
    if report.verdict is not None or primary_metric(report) is None:
        return report.verdict
    return decide(
        report, mde=None, power=0.8, inflow_per_day=None, currency=report.currency or "USD"
    )


def _render(template: str, report: Report, autoescape: bool) -> str:
    tpl = _environment(autoescape).get_template(template)
    return tpl.render(report=report, primary=primary_metric(report), verdict_=verdict_of(report))


def render_markdown(report: Report) -> str:
    """The report as Markdown: headline for the primary metric, SRM warning, a table per metric,
    survival and balance sections and the methods."""
    return _render("report.md.j2", report, autoescape=False)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts, autoescaped)."""
    return _render("report.html.j2", report, autoescape=True)


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir`` (created if
    missing); return their paths under the keys ``json``, ``markdown`` and ``html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    paths["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
