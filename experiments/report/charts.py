"""SVG geometry of the report's Kaplan–Meier chart, and the survival numbers its Markdown table
reads (pure; the templates draw what these functions compute)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.report.lift_chart import ARM_COLORS as _ARM_COLORS
from experiments.report.lift_chart import BASELINE_COLOR as _BASELINE_COLOR
from experiments.report.models import SurvivalArm, SurvivalReport


@dataclass(frozen=True)
class KmSeries:
    """One arm's Kaplan–Meier step curve and its CI band as SVG path data, and where its legend
    entry starts (pixels)."""

    name: str
    color: str
    line: str
    band: str
    legend_x: float


@dataclass(frozen=True)
class KmChart:
    """Geometry of the Kaplan–Meier chart: plot box, ticks ``(pixel, label)``, curves."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    horizon_x: float
    series: tuple[KmSeries, ...]


def _steps(days: Sequence[int], values: Sequence[float], end: int) -> list[tuple[int, float]]:
    """Corners of a right-continuous step function that is 1 before ``days[0]``."""
    points, level = [(0, 1.0)], 1.0
    for day, value in zip(days, values, strict=True):
        points += [(day, level), (day, value)]
        level = value
    return [*points, (end, level)]


def _nice_step(span: float, candidates: Sequence[float], most: int) -> float:
    return next((s for s in candidates if span / s <= most), candidates[-1])


def km_chart(
    survival: SurvivalReport, baseline: str, width: int = 880, height: int = 380
) -> KmChart:
    """The Kaplan–Meier chart: days since assignment on x (0 to the end of follow-up or the RMST
    horizon, whichever is later), share still subscribed on y (zoomed to the curves' range)."""
    left, top, right, bottom = 64, 40, width - 16, height - 48
    x_max = max([survival.horizon_days] + [a.days[-1] + 1 for a in survival.arms if a.days])
    low = min([1.0] + [v for a in survival.arms for v in a.ci_low + a.survival])
    y_step = _nice_step(1 - low + 0.02, (0.02, 0.05, 0.1, 0.2), 6)
    y_min = max(0.0, math.floor((low - 0.01) / y_step) * y_step)

    def px(day: float) -> float:
        return round(left + day / x_max * (right - left), 1)

    def py(share: float) -> float:
        return round(bottom - (share - y_min) / (1 - y_min) * (bottom - top), 1)

    def path(points: Sequence[tuple[int, float]]) -> str:
        return "M" + " L".join(f"{px(d)},{py(s)}" for d, s in points)

    colors = iter(_ARM_COLORS * 4)
    series, legend_x = [], left + 8.0
    for arm in survival.arms:
        end = arm.days[-1] + 1 if arm.days else x_max
        upper = _steps(arm.days, arm.ci_high, end)
        lower = _steps(arm.days, arm.ci_low, end)
        color = _BASELINE_COLOR if arm.name == baseline else next(colors)
        line = path(_steps(arm.days, arm.survival, end))
        series.append(KmSeries(arm.name, color, line, path(upper + lower[::-1]) + " Z", legend_x))
        # About 7 px per character of the 12 px legend font, plus the swatch and a gap.
        legend_x += 44 + 7 * len(arm.name + (" (baseline)" if arm.name == baseline else ""))
    x_step = _nice_step(x_max, (1, 2, 5, 10, 15, 30, 60, 90, 180, 365), 10)
    x_ticks = tuple((px(d), f"{d:g}") for d in range(0, x_max + 1, int(x_step)))
    count = round((1 - y_min) / y_step)
    y_ticks = tuple(
        (py(y_min + i * y_step), f"{100 * (y_min + i * y_step):.0f}%") for i in range(count + 1)
    )
    return KmChart(
        width, height, left, top, right, bottom, x_ticks, y_ticks,
        px(survival.horizon_days), tuple(series),
    )  # fmt: skip


def share_after(arm: SurvivalArm, days: int) -> float | None:
    """The Kaplan–Meier share still subscribed after the first ``days`` days (days 0 to
    ``days - 1`` survived, ``S(days - 1)``: the chart's level just left of ``days``); None beyond
    the arm's follow-up."""
    if arm.days and days > arm.days[-1] + 1:
        return None
    level = 1.0
    for d, s in zip(arm.days, arm.survival, strict=True):
        if d >= days:
            break
        level = s
    return level


def survival_checkpoints(horizon: int) -> list[int]:
    """Where the Markdown table reads the curves: usual milestones before the horizon, and it."""
    return sorted({d for d in (7, 14, 30, 60, 90, 180, 365) if d < horizon} | {horizon})
