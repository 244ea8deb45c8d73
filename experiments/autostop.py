"""Auto-stop: which arms an evaluation stops by itself, and which arms are stopped now.

Pure: a built report and the experiment's ``auto_stop`` settings in, decisions out;
:mod:`models.arm_decisions` records them and the assignment, scheduling and dispatch steps enforce
them. Every reading uses the always-valid confidence sequence (:mod:`experiments.stats.
sequential`), never the fixed-horizon test: an evaluation runs every day, and only an
always-valid p-value may be acted on at every look without inflating the false-stop rate.

A comparison *crosses its boundary* when its always-valid p-value, adjusted within its family
(:func:`experiments.stats.multiple.adjust_p_values` with ``analysis.correction``; the primary
metric's treatment arms form one family, every guardrail comparison another), is below
``alpha`` and its always-valid interval excludes 0. Both arms must have ``min_n_per_arm``
customers counted, and the sample ratio of the arms still enrolling must be fine (no decision is
taken on data whose assignment looks broken).

* **guardrail harm** (``on_guardrail_harm``): a guardrail crosses in its bad direction for an arm
  -> that arm stops at once.
* **winner** (``on_winner``, after ``min_days`` since the first assignment): an arm crosses in the
  primary metric's good direction -> the best such arm is kept and every other arm, the baseline
  included, stops enrolling; an arm that crosses in the bad direction (the baseline beats it)
  stops.

Which arms are stopped *now* (:func:`stopped_arms`): an arm's ``status`` in the YAML wins
(``stopped`` or ``running``); without one, an arm is stopped when a decision was recorded for it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from experiments.report.direction import lower_is_better
from experiments.report.models import Comparison, MetricReport, Report, SrmSummary
from experiments.spec import AutoStop, ExperimentSpec
from experiments.stats import srm_test
from experiments.stats.multiple import Correction, adjust_p_values

StopReason = Literal["guardrail_harm", "primary_harm", "winner"]
ARM_STOPPED = "arm_stopped"
"""The reason recorded for a customer not enrolled, or a message not sent, because of a stop."""


@dataclass(frozen=True)
class StopDecision:
    """Stop ``arm`` for ``reason``, with the comparison that decided it: ``compared_arm`` against
    ``baseline`` on ``metric`` (for a winner stop, the winner's comparison)."""

    arm: str
    reason: StopReason
    metric: str
    compared_arm: str
    baseline: str
    abs_lift: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    method: str
    n_arm: int
    n_baseline: int

    def sentence(self) -> str:
        """Why, in a few words (the report's and the log's)."""
        if self.reason == "winner":
            return f"{self.compared_arm} beats {self.baseline} on {self.metric}"
        if self.reason == "primary_harm":
            return f"{self.arm} is worse than {self.baseline} on {self.metric}"
        return f"guardrail harm on {self.metric}"


def stopped_arms(spec: ExperimentSpec, recorded: Collection[str]) -> frozenset[str]:
    """The arms stopped now: a YAML ``status`` wins, else a recorded decision stops the arm."""
    return frozenset(
        arm.name
        for arm in spec.arms
        if arm.status == "stopped" or (arm.status is None and arm.name in recorded)
    )


@dataclass(frozen=True)
class _Crossing:
    metric: MetricReport
    comparison: Comparison
    p_value: float
    direction: Literal["good", "bad"]
    n_arm: int
    n_baseline: int


def _crossings(
    metrics: Sequence[MetricReport], alpha: float, correction: Correction, min_n: int
) -> list[_Crossing]:
    """The comparisons of ``metrics`` (one family) whose always-valid test crossed."""
    pairs = [(m, c) for m in metrics for c in m.comparisons]
    raw = [c.sequential.p_value if c.sequential is not None else None for _, c in pairs]
    adjusted = adjust_p_values(raw, correction)
    found = []
    for (metric, c), p in zip(pairs, adjusted, strict=True):
        ci = c.sequential.abs_ci if c.sequential is not None else None
        if p is None or p >= alpha or ci is None or not (ci[0] > 0 or ci[1] < 0):
            continue
        n = {a.name: a.n for a in metric.arms}
        n_arm, n_base = n.get(c.arm, 0), n.get(c.baseline, 0)
        if min(n_arm, n_base) < min_n:
            continue
        up = ci[0] > 0
        direction: Literal["good", "bad"] = "bad" if up == lower_is_better(metric) else "good"
        found.append(_Crossing(metric, c, p, direction, n_arm, n_base))
    return found


def _decision(arm: str, reason: StopReason, x: _Crossing, method: str) -> StopDecision:
    c = x.comparison
    ci = c.sequential.abs_ci if c.sequential is not None else None
    return StopDecision(
        arm=arm,
        reason=reason,
        metric=x.metric.name,
        compared_arm=c.arm,
        baseline=c.baseline,
        abs_lift=c.abs_lift,
        ci=ci,
        p_value=x.p_value,
        method=method,
        n_arm=x.n_arm,
        n_baseline=x.n_baseline,
    )


def decide_stops(
    report: Report,
    spec: ExperimentSpec,
    *,
    stopped: Collection[str],
    days_running: float | None,
) -> list[StopDecision]:
    """The new stops ``report`` calls for (module docstring); none for an arm already
    ``stopped`` or one whose YAML ``status`` a person set."""
    settings: AutoStop = spec.auto_stop
    if not settings.enabled or not report.srm.ok:
        return []
    correction = spec.analysis.correction
    method = f"sequential (always-valid), {correction} correction"
    free = {a.name for a in spec.arms if a.status is None} - set(stopped)
    decisions: dict[str, StopDecision] = {}
    guardrails = [m for m in report.metrics if m.role == "guardrail"]
    if settings.on_guardrail_harm:
        for x in _crossings(guardrails, report.alpha, correction, settings.min_n_per_arm):
            arm = x.comparison.arm
            if x.direction == "bad" and arm in free and arm not in decisions:
                decisions[arm] = _decision(arm, "guardrail_harm", x, method)
    primary = [m for m in report.metrics if m.role == "primary"]
    old_enough = days_running is not None and days_running >= settings.min_days
    if settings.on_winner and old_enough:
        crossed = _crossings(primary, report.alpha, correction, settings.min_n_per_arm)
        for x in crossed:
            arm = x.comparison.arm
            if x.direction == "bad" and arm in free and arm not in decisions:
                decisions[arm] = _decision(arm, "primary_harm", x, method)
        stopping = set(stopped) | set(decisions)
        winners = [x for x in crossed if x.direction == "good" and x.comparison.arm not in stopping]
        best = max(winners, key=lambda x: abs(x.comparison.abs_lift or 0), default=None)
        if best is not None:
            for arm in sorted(free - set(decisions) - {best.comparison.arm}):
                decisions[arm] = _decision(arm, "winner", best, method)
    order = {a.name: i for i, a in enumerate(spec.arms)}
    return sorted(decisions.values(), key=lambda d: order[d.arm])


def srm_of_running_arms(report: Report, stopped: Collection[str]) -> Report:
    """``report`` with its sample-ratio check over the arms still enrolling.

    A stopped arm enrols nobody from then on, so its count falls behind its weight by design; the
    arms still enrolling keep their weights' ratio among themselves, and that is what is checked
    (a stopped arm's expected count is its observed one). With fewer than two arms enrolling
    there is nothing to compare and the check passes."""
    if not stopped:
        return report
    counts = {a.name: a.n for a in report.arms}
    running = [a for a in report.arms if a.name not in stopped]
    expected: Mapping[str, float] = {name: float(n) for name, n in counts.items()}
    if len(running) >= 2:
        result = srm_test([a.n for a in running], [a.weight for a in running])
        expected = {
            **expected,
            **dict(zip([a.name for a in running], result.expected, strict=True)),
        }
        srm = SrmSummary(
            p_value=result.p_value, ok=result.ok, chi2=result.chi2, expected=dict(expected)
        )
    else:
        srm = SrmSummary(p_value=1.0, ok=True, chi2=0.0, expected=dict(expected))
    return report.model_copy(update={"srm": srm})
