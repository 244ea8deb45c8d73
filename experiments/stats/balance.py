"""Covariate balance table: did randomisation give every arm the same kind of customers?

For each pre-treatment covariate (tenure, plan price, days since last active, ...) the table gives
each arm's mean and, per non-baseline arm, the standardised mean difference against the baseline
(Austin 2009, "Balance diagnostics for comparing the distribution of baseline covariates between
treatment groups in propensity-score matched samples", Statistics in Medicine 28)::

    smd = (m_t - m_b) / sqrt((v_t + v_b) / 2)

with the arms' sample variances ``v`` (``n - 1`` denominator, the same for binary covariates, where
it is within ``1/(n-1)`` of the textbook ``p (1 - p)``). Unlike a p-value, the SMD does not grow
with the sample size, so it measures the size of an imbalance rather than its detectability.
A row is flagged when any ``|smd| > 0.1``, the usual threshold (Normand et al. 2001; Austin 2009):
a tenth of a standard deviation is where imbalance starts to bias an unadjusted comparison.
Under correct randomisation the SMD is noise with standard error about ``sqrt(1/n_t + 1/n_b)``,
so flags by chance are common in small arms (with 200 units per arm that is 0.1 itself); in large
arms a flag points at assignment being linked to the covariate (e.g. a stratum rolled out late).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.stats.frequentist import SampleStats


@dataclass(frozen=True)
class BalanceRow:
    """One covariate: mean per arm, SMD per non-baseline arm vs the baseline, and the flag.

    An SMD is None when undefined: an arm with fewer than 2 units, or both arms with zero
    variance (see :func:`balance_table`).
    """

    covariate: str
    means: dict[str, float]
    smd: dict[str, float | None]
    flagged: bool


def _smd(treatment: SampleStats, baseline: SampleStats) -> float | None:
    if treatment.n < 2 or baseline.n < 2:
        return None
    pooled = math.sqrt((treatment.variance + baseline.variance) / 2)
    if pooled == 0:
        return None
    value = (treatment.mean - baseline.mean) / pooled
    return value if math.isfinite(value) else None


def _check(covariates: Mapping[str, Mapping[str, SampleStats]], baseline: str) -> None:
    arm_sets = {name: list(arms) for name, arms in covariates.items()}
    first_name, first_arms = next(iter(arm_sets.items()))
    if len(first_arms) < 2:
        raise ValueError(
            f"balance_table: covariate {first_name!r} has {len(first_arms)} arm(s) "
            f"{first_arms}; at least 2 arms are needed to compare"
        )
    for name, arms in covariates.items():
        if baseline not in arms:
            raise ValueError(
                f"balance_table: covariate {name!r} has no baseline arm {baseline!r} "
                f"(arms: {list(arms)})"
            )
        if set(arms) != set(first_arms):
            raise ValueError(
                f"balance_table: covariate {name!r} has arms {list(arms)} but covariate "
                f"{first_name!r} has {first_arms}; every covariate needs the same arms"
            )
        for arm, s in arms.items():
            if not isinstance(s, SampleStats):
                raise ValueError(
                    f"balance_table: covariate {name!r}, arm {arm!r} must be SampleStats, got {s!r}"
                )
            if s.n == 0:
                raise ValueError(
                    f"balance_table: covariate {name!r}, arm {arm!r} is empty (n=0); "
                    f"it has no units"
                )


def balance_table(
    covariates: Mapping[str, Mapping[str, SampleStats]], baseline: str, threshold: float = 0.1
) -> list[BalanceRow]:
    """The balance table, one row per covariate (covariate -> arm -> stats), in input order.

    ``smd[arm] = (m_arm - m_baseline) / sqrt((v_arm + v_baseline) / 2)`` for every arm except the
    baseline (formula and reference in the module docstring). ``flagged`` is True when any
    ``|smd| > threshold`` (0.1 by default), or when an SMD is undefined while the means differ
    (a covariate constant within each arm but different between them is perfect separation; with
    fewer than 2 units in an arm nothing shows balance). An undefined SMD with equal means (a
    covariate constant across arms) is not flagged.

    No covariates gives ``[]``. Fewer than 2 arms, a missing baseline arm, covariates with
    different arms, an empty arm or a non-positive threshold raise ValueError naming the
    covariate and arm.
    """
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"balance_table: threshold must be a finite number > 0, got {threshold!r}")
    if not covariates:
        return []
    _check(covariates, baseline)
    rows = []
    for name, arms in covariates.items():
        base = arms[baseline]
        means = {arm: s.mean for arm, s in arms.items()}
        smd = {arm: _smd(s, base) for arm, s in arms.items() if arm != baseline}
        flagged = any(
            abs(value) > threshold if value is not None else arms[arm].mean != base.mean
            for arm, value in smd.items()
        )
        rows.append(BalanceRow(name, means, smd, flagged))
    return rows
