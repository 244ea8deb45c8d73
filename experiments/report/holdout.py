"""The whole retention programme's effect: every treated customer against the global holdout.

The global holdout (:mod:`experiments.holdout`) is a fixed share of all customers that no
experiment treats; an experiment records the ones it selects in its ``holdout`` arm. Its treated
customers are those of the arms that send something (messages or an offer), whatever the arm's
role in the experiment. Both groups come from the same segment at the same times, so their
difference is what the programme adds over doing nothing. Per experiment in its report; pooled
over every experiment in the index (:func:`programme`), where a customer in several experiments
counts once per experiment.

The test is the report's headline method (always-valid by default: the comparison is read at
every report), on the same sufficient statistics as the arms'; no correction for multiple
comparisons (a separate, descriptive family).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from experiments.metrics import CATALOGUE
from experiments.report.models import ArmMetricStats, HoldoutComparison, HoldoutMetric, Report
from experiments.report.numbers import is_money
from experiments.report.timeline import EMPTY, sample_of
from experiments.stats import SampleStats, compare
from experiments.stats.sequential import SequentialSettings, sequential_test

# Compared for every experiment with a holdout, besides the experiment's own metrics.
RETENTION_METRICS = ("retained_30d", "retained_90d")
Method = Literal["fixed", "sequential"]


def _arm(name: str, s: SampleStats) -> ArmMetricStats:
    return ArmMetricStats(name=name, n=s.n, mean=s.mean, sum=s.sum, variance=s.variance)


def holdout_metric(
    name: str,
    treated: SampleStats,
    holdout: SampleStats,
    method: Method,
    alpha: float,
    tuning_n: int,
) -> HoldoutMetric:
    """Treated against holdout on metric ``name`` by ``method``."""
    kind = CATALOGUE[name].kind
    if method == "sequential":
        seq = sequential_test(kind, treated, holdout, SequentialSettings(tuning_n, alpha))
        lift, ci, rel, p, status = seq.abs_lift, seq.abs_ci, seq.rel_lift, seq.p_value, seq.status
    else:
        fixed = compare(kind, treated, holdout, alpha)
        lift, ci, rel, p = fixed.abs_lift, fixed.abs_ci, fixed.rel_lift, fixed.p_value
        status = fixed.status
    return HoldoutMetric(
        name=name,
        kind=kind,
        treated=_arm("treated", treated),
        holdout=_arm("holdout", holdout),
        abs_lift=lift,
        ci=ci,
        rel_lift=rel,
        p_value=p,
        significant=p is not None and p < alpha,
        status=status,
    )


def holdout_comparison(
    stats: Mapping[str, tuple[SampleStats, SampleStats]],
    treated_arms: Sequence[str],
    holdout_arm: str,
    method: Method,
    alpha: float,
    tuning_n: int,
    experiments: Sequence[str] = (),
) -> HoldoutComparison:
    """Per metric, ``stats[metric] = (treated, holdout)`` compared by ``method``."""
    return HoldoutComparison(
        treated_arms=list(treated_arms),
        holdout_arm=holdout_arm,
        method=method,
        alpha=alpha,
        metrics=[
            holdout_metric(name, t, h, method, alpha, tuning_n) for name, (t, h) in stats.items()
        ],
        experiments=list(experiments),
    )


def programme(reports: Iterable[Report], tuning_n: int = 5_000) -> HoldoutComparison | None:
    """Every experiment's treated and holdout customers pooled per metric (in the metrics'
    first-seen order) and compared with the always-valid test; ``None`` when no report has a
    holdout comparison. Amounts of money are pooled only when every report is in one currency."""
    with_holdout = [r for r in reports if r.holdout is not None]
    one_currency = len({r.currency for r in with_holdout}) <= 1
    pooled: dict[str, tuple[SampleStats, SampleStats]] = {}
    arms: list[str] = []
    keys: list[str] = []
    alpha = 0.05
    for report in with_holdout:
        h = report.holdout
        assert h is not None
        keys.append(report.experiment)
        alpha = h.alpha
        arms += [f"{report.experiment}:{arm}" for arm in h.treated_arms]
        for m in h.metrics:
            if is_money(m.name) and not one_currency:
                continue
            t, b = pooled.get(m.name, (EMPTY, EMPTY))
            pooled[m.name] = (t.plus(sample_of(m.treated)), b.plus(sample_of(m.holdout)))
    if not keys:
        return None
    return holdout_comparison(pooled, arms, "holdout", "sequential", alpha, tuning_n, keys)
