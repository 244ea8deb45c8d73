"""The experiment report: the ``report.json`` contract (pydantic), rendered as Markdown and HTML.

``build_report`` runs the v1 tests of :mod:`experiments.stats` on per-arm sufficient statistics and
returns a :class:`Report`; ``write_report`` writes ``report.json``, ``report.md`` and
``report.html``. The field names of :class:`Report` are documented for users: do not rename them.
Templates live in ``experiments/report_templates`` and are rendered with jinja2 (HTML autoescaped).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from pydantic import BaseModel, ConfigDict

from experiments.metrics import MetricKind, MetricRole
from experiments.stats import ComparisonStatus, SampleStats, compare, srm_test


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSummary(_Model):
    name: str
    weight: float
    n: int


class SrmSummary(_Model):
    p_value: float
    ok: bool
    chi2: float
    expected: dict[str, float]


class ArmMetricStats(_Model):
    name: str
    n: int
    mean: float
    sum: float
    variance: float


class Comparison(_Model):
    arm: str
    baseline: str
    abs_lift: float | None
    abs_ci: tuple[float, float] | None
    rel_lift: float | None
    rel_ci: tuple[float, float] | None
    p_value: float | None
    method: str
    status: ComparisonStatus
    significant: bool
    planted_abs_lift: float | None


class MetricReport(_Model):
    name: str
    kind: MetricKind
    role: MetricRole
    description: str
    arms: list[ArmMetricStats]
    comparisons: list[Comparison]


class Report(_Model):
    experiment: str
    hypothesis: str
    computed_at: str
    as_of: str
    alpha: float
    baseline: str
    arms: list[ArmSummary]
    srm: SrmSummary
    metrics: list[MetricReport]


@dataclass(frozen=True)
class MetricInput:
    """One metric to report: its catalogue facts and the sufficient statistics of every arm."""

    name: str
    kind: MetricKind
    role: MetricRole
    description: str
    arm_stats: Mapping[str, SampleStats]


def _iso_utc(value: datetime, field: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"build_report: {field} must be timezone-aware (UTC), got {value!r}")
    return value.astimezone(UTC).isoformat()


def _check_inputs(
    baseline: str,
    arm_weights: Mapping[str, float],
    metrics: Sequence[MetricInput],
    planted: Mapping[tuple[str, str], float],
) -> MetricInput:
    """Validate the inputs of build_report and return the primary metric."""
    arms = list(arm_weights)
    if len(arms) < 2:
        raise ValueError(f"build_report needs at least 2 arms in arm_weights, got {arms}")
    if baseline not in arm_weights:
        raise ValueError(f"build_report: baseline arm {baseline!r} is not one of the arms {arms}")
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"build_report: metric names must be unique, repeated: {duplicates}")
    for m in metrics:
        if set(m.arm_stats) != set(arms):
            raise ValueError(
                f"build_report: metric {m.name!r} has statistics for arms {sorted(m.arm_stats)} "
                f"but the experiment's arms are {sorted(arms)}"
            )
    primaries = [m.name for m in metrics if m.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(
            f"build_report needs exactly one metric with role 'primary', got {primaries or 'none'}"
        )
    for metric_name, arm in planted:
        if metric_name not in names or arm not in arms or arm == baseline:
            raise ValueError(
                f"build_report: planted effect for ({metric_name!r}, {arm!r}) does not name a "
                f"reported metric and a non-baseline arm (metrics {names}, arms {arms})"
            )
    return next(m for m in metrics if m.role == "primary")


def _arm_stats(name: str, s: SampleStats) -> ArmMetricStats:
    return ArmMetricStats(name=name, n=s.n, mean=s.mean, sum=float(s.sum), variance=s.variance)


def _metric_report(
    m: MetricInput,
    baseline: str,
    arms: Sequence[str],
    alpha: float,
    planted: Mapping[tuple[str, str], float],
) -> MetricReport:
    base = m.arm_stats[baseline]
    comparisons = []
    for arm in arms:
        if arm == baseline:
            continue
        result = compare(m.kind, m.arm_stats[arm], base, alpha)
        comparisons.append(
            Comparison(
                arm=arm,
                baseline=baseline,
                abs_lift=result.abs_lift,
                abs_ci=result.abs_ci,
                rel_lift=result.rel_lift,
                rel_ci=result.rel_ci,
                p_value=result.p_value,
                method=result.method,
                status=result.status,
                significant=result.p_value is not None and result.p_value < alpha,
                planted_abs_lift=planted.get((m.name, arm)),
            )
        )
    return MetricReport(
        name=m.name,
        kind=m.kind,
        role=m.role,
        description=m.description,
        arms=[_arm_stats(a, m.arm_stats[a]) for a in arms],
        comparisons=comparisons,
    )


def build_report(
    *,
    experiment: str,
    hypothesis: str,
    computed_at: datetime,
    as_of: datetime,
    alpha: float,
    baseline: str,
    arm_weights: Mapping[str, float],
    metrics: Sequence[MetricInput],
    planted: Mapping[tuple[str, str], float] | None = None,
) -> Report:
    """Compare every non-baseline arm with ``baseline`` on every metric and check the sample ratio.

    The SRM check uses the arms' ``n`` in the primary metric (every metric is measured on the same
    assigned population) against ``arm_weights``. ``planted`` maps ``(metric, arm)`` to the true
    absolute lift, known only in the synthetic demo. ``significant`` is ``p_value < alpha``; no
    multiple-comparison correction is applied in v1. Raises ValueError naming the bad input.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"build_report: alpha must be strictly between 0 and 1, got {alpha!r}")
    planted = planted or {}
    primary = _check_inputs(baseline, arm_weights, metrics, planted)
    arms = list(arm_weights)
    counts = [primary.arm_stats[a].n for a in arms]
    srm = srm_test(counts, [arm_weights[a] for a in arms])
    return Report(
        experiment=experiment,
        hypothesis=hypothesis,
        computed_at=_iso_utc(computed_at, "computed_at"),
        as_of=_iso_utc(as_of, "as_of"),
        alpha=alpha,
        baseline=baseline,
        arms=[
            ArmSummary(name=a, weight=arm_weights[a], n=n)
            for a, n in zip(arms, counts, strict=True)
        ],
        srm=SrmSummary(
            p_value=srm.p_value,
            ok=srm.ok,
            chi2=srm.chi2,
            expected=dict(zip(arms, srm.expected, strict=True)),
        ),
        metrics=[_metric_report(m, baseline, arms, alpha, planted) for m in metrics],
    )


# --- formatting shared by both renderings -------------------------------------------------------

_DASH = "—"
_STATUS_NOTES: dict[str, str] = {
    "ok": "",
    "n_too_small": "too few customers to compare yet (at least 2 per arm are needed)",
    "zero_variance": "every customer in both arms has the same value, so no test is possible yet",
    "zero_baseline": "the baseline is 0, so the relative lift is undefined",
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


def planted_note(c: Comparison, kind: str) -> str:
    """The planted (true) effect and whether the CI covers it; empty when nothing was planted."""
    if c.planted_abs_lift is None:
        return ""
    text = fmt_lift(c.planted_abs_lift, kind)
    if c.abs_ci is None:
        return text
    inside = c.abs_ci[0] <= c.planted_abs_lift <= c.abs_ci[1]
    return f"{text} ({'inside' if inside else 'outside'} CI)"


def verdict(c: Comparison) -> str:
    """A plain-English verdict for one comparison."""
    if c.status in ("n_too_small", "zero_variance"):
        return f"no verdict: {_STATUS_NOTES[c.status]}"
    if c.significant and c.abs_lift is not None:
        direction = "higher" if c.abs_lift > 0 else "lower"
        return f"significantly {direction} than {c.baseline}"
    return f"no significant difference from {c.baseline}"


def arm_mean(metric: MetricReport, arm: str) -> float | None:
    """The mean of ``arm`` on ``metric``."""
    return next((a.mean for a in metric.arms if a.name == arm), None)


def best_arm(metric: MetricReport) -> Comparison | None:
    """The comparison with the largest significant positive lift, if any."""
    winners = [c for c in metric.comparisons if c.significant and (c.abs_lift or 0) > 0]
    return max(winners, key=lambda c: c.abs_lift or 0, default=None)


def any_planted(metrics: Sequence[MetricReport]) -> bool:
    """Whether any comparison of these metrics carries a planted (true) effect."""
    return any(c.planted_abs_lift is not None for m in metrics for c in m.comparisons)


def primary_metric(report: Report) -> MetricReport | None:
    """The report's primary metric (None only for a hand-made report without one)."""
    return next((m for m in report.metrics if m.role == "primary"), None)


@dataclass(frozen=True)
class CiBar:
    """SVG geometry (pixels) of one CI bar on a symmetric axis shared by a metric's comparisons."""

    width: int
    zero: float
    lo: float | None
    hi: float | None
    estimate: float | None
    planted: float | None
    tone: str


def ci_bars(metric: MetricReport, width: int = 220, pad: int = 8) -> dict[str, CiBar]:
    """CI bars per compared arm, on an axis symmetric about 0 that fits every CI and estimate."""
    values = [0.0]
    for c in metric.comparisons:
        values += [v for v in (c.abs_lift, c.planted_abs_lift) if v is not None]
        values += list(c.abs_ci or ())
    half = max(abs(v) for v in values) or 1.0

    def x(v: float | None) -> float | None:
        return None if v is None else round(pad + (v + half) / (2 * half) * (width - 2 * pad), 1)

    bars = {}
    for c in metric.comparisons:
        lo, hi = c.abs_ci if c.abs_ci is not None else (None, None)
        tone = "up" if c.significant and (c.abs_lift or 0) > 0 else "flat"
        if c.significant and (c.abs_lift or 0) < 0:
            tone = "down"
        bars[c.arm] = CiBar(
            width, x(0.0) or 0.0, x(lo), x(hi), x(c.abs_lift), x(c.planted_abs_lift), tone
        )
    return bars


def _md_text(value: object) -> str:
    """Free text for Markdown: HTML-escaped (renderers pass raw HTML through) and safe in tables."""
    return html.escape(str(value)).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ci_label(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}% CI"


def _when(iso: str) -> str:
    """An ISO timestamp as people read it: ``2026-11-21 06:08 UTC``."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@functools.cache
def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("experiments", "report_templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        mean=fmt_mean,
        lift=fmt_lift,
        ci=fmt_ci,
        p=fmt_p,
        p_clause=fmt_p_clause,
        md=_md_text,
        when=_when,
    )
    env.globals.update(
        lift_ci=fmt_lift_ci,
        rel_ci=fmt_rel_ci,
        verdict=verdict,
        planted_note=planted_note,
        arm_mean=arm_mean,
        best_arm=best_arm,
        any_planted=any_planted,
        ci_bars=ci_bars,
        ci_label=_ci_label,
        status_notes=_STATUS_NOTES,
    )
    return env


def _render(template: str, report: Report, autoescape: bool) -> str:
    tpl = _environment(autoescape).get_template(template)
    return tpl.render(report=report, primary=primary_metric(report))


def render_markdown(report: Report) -> str:
    """The report as Markdown: headline for the primary metric, SRM warning, a table per metric."""
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
