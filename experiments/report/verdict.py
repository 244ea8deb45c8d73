"""The verdict at the top of the report: ship, stop an arm for guardrail harm, keep waiting (and
for how long), or hold, in one plain sentence with what the result is worth.

Everything here reads significance by the headline method (:mod:`experiments.report.direction`).
The wait is the fixed-horizon sample size for the planned MDE (:func:`experiments.stats.power.
sample_size_per_arm`, Bonferroni over the treatment arms); with a sequential headline the
always-valid interval needs somewhat more, which the sentence does not hide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.report.direction import (
    best_arm,
    guardrail_warnings,
    headline_ci,
    primary_metric,
)
from experiments.report.models import Comparison, MetricReport, Report, Verdict
from experiments.report.numbers import (
    fmt_count,
    fmt_mde,
    fmt_money,
    fmt_rate,
    is_money,
    lift_parts,
    round_sig,
)
from experiments.stats.power import sample_size_per_arm

DAYS_PER_MONTH = 30.4
MONEY_METRICS = ("net_revenue_90d", "revenue_90d")


@dataclass(frozen=True)
class Wait:
    """How many customers per arm the planned MDE needs, how many more, and how many days."""

    n_needed_per_arm: int | None
    more_per_arm: int | None
    days: float | None


def sample_needed(report: Report, mde: float | None, power: float) -> int | None:
    """Customers per arm to detect ``mde`` on the primary metric at the baseline's observed mean
    and variance; None without an MDE or when the baseline cannot support the formula."""
    primary = primary_metric(report)
    if primary is None or mde is None:
        return None
    base = next((a for a in primary.arms if a.name == report.baseline), None)
    if base is None or base.n < 2:
        return None
    try:
        return sample_size_per_arm(
            primary.kind, base.mean, base.variance, mde, report.alpha, power, len(report.arms)
        )
    except ValueError:  # a baseline rate of 0 or 1, or no variance: no formula applies
        return None


def wait_for(report: Report, n_needed: int | None, inflow_per_day: float | None) -> Wait:
    """More customers per arm to reach ``n_needed``, and the days of segment inflow that takes
    (each arm receives its weight's share of the inflow; the slowest arm sets the pace)."""
    primary = primary_metric(report)
    if n_needed is None or primary is None:
        return Wait(n_needed, None, None)
    counted = {a.name: a.n for a in primary.arms}
    more = {a.name: max(0, n_needed - counted.get(a.name, 0)) for a in report.arms}
    most = max(more.values(), default=0)
    days = None
    if inflow_per_day and inflow_per_day > 0:
        total = sum(a.weight for a in report.arms)
        days = max(more[a.name] / (inflow_per_day * a.weight / total) for a in report.arms)
    return Wait(n_needed, most, days)


def _metric_words(metric: MetricReport) -> str:
    return f"{metric.name} ({metric.description})" if metric.description else metric.name


def _money_sentence(
    report: Report, arm: str, inflow_per_day: float | None, currency: str
) -> tuple[str, str | None, float | None]:
    """``about $X more net revenue per month ...``, the metric and the amount; empty without a
    revenue metric or an inflow."""
    metric = next((m for n in MONEY_METRICS for m in report.metrics if m.name == n), None)
    if metric is None:
        return "", None, None
    c = next((c for c in metric.comparisons if c.arm == arm), None)
    if c is None or c.abs_lift is None:
        return (
            f"; what it is worth in {metric.name} is not known yet (too few customers counted)",
            metric.name,
            None,
        )
    words = "net revenue" if metric.name.startswith("net_") else "revenue"
    if inflow_per_day is None:
        return "", metric.name, None
    if inflow_per_day <= 0:
        return (
            "; what it is worth per month cannot be estimated: no customers entered the segment "
            "in the last 7 days",
            metric.name,
            None,
        )
    per_month = c.abs_lift * inflow_per_day * DAYS_PER_MONTH
    direction = "more" if per_month >= 0 else "less"
    monthly = fmt_count(inflow_per_day * DAYS_PER_MONTH)
    unsure = "" if c.significant else f" (the {words} difference itself is not significant)"
    return (
        f"; about {fmt_money(round_sig(abs(per_month), 2), currency)} {direction} {words} within 90 days per "
        f"month at today's segment inflow ({monthly} customers a month){unsure}",
        metric.name,
        per_month,
    )


def _ship_text(
    report: Report, primary: MetricReport, c: Comparison, currency: str, money: str
) -> tuple[str, float | None]:
    assert c.abs_lift is not None
    money_unit = currency if is_money(primary.name) else None
    lift, ci = lift_parts(c.abs_lift, headline_ci(c), primary.kind, money_unit)
    label = ("always-valid " if c.headline == "sequential" else "") + _ci_label(report.alpha)
    shown = f"{lift} on {_metric_words(primary)}" + (f" ({label} {ci})" if ci else "")
    per_10k = c.abs_lift * 10_000
    shown_10k = round_sig(abs(per_10k))
    if primary.kind == "binary":
        fewer = "fewer" if per_10k < 0 else "more"
        worth = f"about {fmt_count(shown_10k)} {fewer} customers per 10,000 targeted"
    else:
        amount = fmt_money(shown_10k, currency) if money_unit else fmt_count(shown_10k)
        worth = f"about {amount} {'less' if per_10k < 0 else 'more'} per 10,000 targeted"
    return f"Ship {c.arm}: {shown}; {worth}{money}.", per_10k


def _ci_label(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}% CI"


def decide(
    report: Report,
    *,
    mde: float | None,
    power: float,
    inflow_per_day: float | None,
    currency: str,
) -> Verdict:
    """The verdict for ``report`` (see the module docstring)."""
    primary = primary_metric(report)
    if primary is None:
        raise ValueError("decide: the report has no primary metric")
    method = report.analysis.method if report.analysis is not None else "fixed"
    harm: dict[str, list[str]] = {}
    for m, c in guardrail_warnings(report):
        harm.setdefault(c.arm, []).append(m.name)
    n_needed = sample_needed(report, mde, power)
    wait = wait_for(report, n_needed, inflow_per_day)
    fields: dict[str, object] = {
        "metric": primary.name,
        "method": method,
        "currency": currency,
        "inflow_per_day": inflow_per_day,
        "mde": mde,
        "n_needed_per_arm": wait.n_needed_per_arm,
        "more_per_arm": wait.more_per_arm,
        "days_needed": wait.days,
        "stop_arms": sorted(harm),
        "abs_lift": None,
        "ci": None,
        "per_10k": None,
        "money_metric": None,
        "money_per_month": None,
        "arm": None,
    }
    if not report.srm.ok:
        sizes = ", ".join(f"{a.name} {fmt_count(a.n)}" for a in report.arms)
        text = (
            f"Hold: do not act on these results. The arms' sizes ({sizes}) do not match the "
            f"planned split (sample ratio mismatch), so assignment or data collection is broken."
        )
        return Verdict(decision="hold", text=text, **fields)
    # The best arm that lifts the primary metric without harming a guardrail ships; a better arm
    # that does harm is stopped, never shipped.
    winner = best_arm(primary, exclude=set(harm))
    harmful_winner = best_arm(primary)
    stops = "".join(
        f" Stop {arm}: guardrail harm on {', '.join(names)}." for arm, names in sorted(harm.items())
    )
    if winner is not None:
        money, money_metric, per_month = _money_sentence(
            report, winner.arm, inflow_per_day, currency
        )
        text, per_10k = _ship_text(report, primary, winner, currency, money)
        fields.update(
            arm=winner.arm,
            abs_lift=winner.abs_lift,
            ci=headline_ci(winner),
            per_10k=per_10k,
            money_metric=money_metric,
            money_per_month=per_month,
        )
        return Verdict(decision="ship", text=text + stops, **fields)
    if harm:
        arm = harmful_winner.arm if harmful_winner is not None else sorted(harm)[0]
        c = next(c for c in primary.comparisons if c.arm == arm)
        fields.update(arm=arm, abs_lift=c.abs_lift, ci=headline_ci(c))
        text = stops.strip()
        if harmful_winner is not None:
            text += f" ({arm} also lifts {primary.name}, but not without the harm.)"
        return Verdict(decision="stop_arm", text=text, **fields)
    unit = currency if is_money(primary.name) else None
    text = _wait_text(primary, wait, mde, inflow_per_day, unit)
    decision = "no_difference" if wait.more_per_arm == 0 else "no_difference_yet"
    return Verdict(decision=decision, text=text, **fields)


def _wait_text(
    primary: MetricReport,
    wait: Wait,
    mde: float | None,
    inflow_per_day: float | None,
    money: str | None,
) -> str:
    counted = min((a.n for a in primary.arms), default=0)
    head = f"No detectable difference yet on {primary.name}"
    if counted < 2:
        return f"{head}: too few customers are counted so far (the metric's window has to end)."
    if mde is None:
        return (
            f"{head}. Set analysis.mde (the smallest lift worth detecting) to see how many more "
            f"customers and days it takes."
        )
    shown_mde = fmt_mde(mde, primary.kind, money)
    if wait.more_per_arm is None:
        return f"{head}; the sample needed for the planned MDE of {shown_mde} cannot be computed from this baseline."
    if wait.more_per_arm == 0:
        return (
            f"No difference of the planned MDE ({shown_mde}) or more on {primary.name}: each arm "
            f"has the {fmt_count(wait.n_needed_per_arm)} customers needed to detect it. The arms "
            f"perform alike; keep the cheaper one."
        )
    if inflow_per_day is None:
        when = "the segment's daily inflow is unknown"
    elif wait.days is None or not math.isfinite(wait.days):
        when = (
            "no customers entered the segment in the last 7 days, so the wait cannot be estimated"
        )
    else:
        days = fmt_count(round_sig(math.ceil(wait.days), 2))
        when = f"≈ {days} days at the current inflow of {fmt_rate(inflow_per_day)} a day"
    return (
        f"{head}: about {fmt_count(round_sig(wait.more_per_arm, 2))} more customers per arm ({when}) to "
        f"detect the planned MDE of {shown_mde}."
    )
