"""SVG geometry of the report's lift charts: per metric, each arm's lift with its CI against zero
(the headline method's CI thick, the other method's thin); and the primary metric's lift over time
with its always-valid band. Pure; the templates draw what these functions compute."""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.report.direction import headline_ci, secondary_ci, tone
from experiments.report.models import LiftOverTime, MetricReport

# Okabe & Ito's colour-blind-safe palette (baseline grey, then the arms).
BASELINE_COLOR = "#555555"
ARM_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")


@dataclass(frozen=True)
class CiBar:
    """One arm's CI bar (pixels) on an axis symmetric about 0 shared by a metric's comparisons:
    the headline CI (thick), the other method's CI (thin), the estimate and the planted effect."""

    width: int
    zero: float
    lo: float | None
    hi: float | None
    alt_lo: float | None
    alt_hi: float | None
    estimate: float | None
    planted: float | None
    tone: str


def ci_bars(metric: MetricReport, width: int = 120, pad: int = 8) -> dict[str, CiBar]:
    """CI bars per compared arm, on an axis symmetric about 0 that fits every CI and estimate."""
    values = [0.0]
    for c in metric.comparisons:
        values += [v for v in (c.abs_lift, c.planted_abs_lift) if v is not None]
        values += list(headline_ci(c) or ()) + list(secondary_ci(c) or ())
    half = max(abs(v) for v in values) or 1.0

    def x(v: float | None) -> float | None:
        return None if v is None else round(pad + (v + half) / (2 * half) * (width - 2 * pad), 1)

    bars = {}
    for c in metric.comparisons:
        lo, hi = headline_ci(c) or (None, None)
        alt_lo, alt_hi = secondary_ci(c) or (None, None)
        bars[c.arm] = CiBar(
            width,
            x(0.0) or 0.0,
            x(lo),
            x(hi),
            x(alt_lo),
            x(alt_hi),
            x(c.abs_lift),
            x(c.planted_abs_lift),
            tone(metric, c),
        )
    return bars


@dataclass(frozen=True)
class TimeSeries:
    """One arm's lift over time: the estimate's line, the CI band, the last point's CI bar."""

    arm: str
    color: str
    line: str
    band: str
    last_x: float
    last_y: float
    last_lo: float | None
    last_hi: float | None
    legend_x: float


@dataclass(frozen=True)
class LiftTimeChart:
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    zero_y: float
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    series: tuple[TimeSeries, ...]


def _nice(span: float) -> float:
    """A round tick step giving about 4 to 8 ticks over ``span``."""
    raw = span / 5 or 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def lift_chart(timeline: LiftOverTime, width: int = 880, height: int = 300) -> LiftTimeChart:
    """The lift-over-time chart: days since the first assignment on x, the lift on y (percentage
    points for binary metrics), zero marked; an arm with one point is drawn as a dot and CI bar."""
    left, top, right, bottom = 64, 36, width - 16, height - 44
    scale = 100.0 if timeline.kind == "binary" else 1.0
    points = [p for s in timeline.arms for p in s.points]
    days = [p.day for p in points] or [0]
    x_max = max(max(days), 1)
    values = [0.0] + [
        v * scale for p in points for v in (p.abs_lift, *(p.ci or ())) if v is not None
    ]
    y_lo, y_hi = min(values), max(values)
    step = _nice(y_hi - y_lo)
    y_lo, y_hi = math.floor(y_lo / step) * step, math.ceil(y_hi / step) * step
    if y_hi == y_lo:
        y_hi = y_lo + step

    def px(day: float) -> float:
        return round(left + day / x_max * (right - left), 1)

    def py(value: float) -> float:
        return round(bottom - (value * scale - y_lo) / (y_hi - y_lo) * (bottom - top), 1)

    series, legend_x = [], left + 8.0
    for i, s in enumerate(timeline.arms):
        shown = [p for p in s.points if p.abs_lift is not None]
        with_ci = [p for p in shown if p.ci is not None]
        line = (
            "M" + " L".join(f"{px(p.day)},{py(p.abs_lift or 0.0)}" for p in shown) if shown else ""
        )
        band = ""
        if len(with_ci) >= 2:
            upper = [f"{px(p.day)},{py(p.ci[1])}" for p in with_ci if p.ci]
            lower = [f"{px(p.day)},{py(p.ci[0])}" for p in reversed(with_ci) if p.ci]
            band = "M" + " L".join(upper + lower) + " Z"
        last = shown[-1] if shown else None
        series.append(
            TimeSeries(
                arm=s.arm,
                color=ARM_COLORS[i % len(ARM_COLORS)],
                line=line,
                band=band,
                last_x=px(last.day) if last else px(0),
                last_y=py(last.abs_lift or 0.0) if last else py(0.0),
                last_lo=py(last.ci[0]) if last and last.ci else None,
                last_hi=py(last.ci[1]) if last and last.ci else None,
                legend_x=legend_x,
            )
        )
        legend_x += 40 + 7 * len(s.arm)
    x_step = max(1, int(_nice(x_max)))
    x_ticks = tuple((px(d), f"{d}") for d in range(0, x_max + 1, x_step))
    count = round((y_hi - y_lo) / step)
    unit = " pp" if timeline.kind == "binary" else ""
    y_ticks = tuple(
        (py((y_lo + k * step) / scale), f"{y_lo + k * step:+g}{unit}") for k in range(count + 1)
    )
    return LiftTimeChart(
        width, height, left, top, right, bottom, py(0.0), x_ticks, y_ticks, tuple(series)
    )
