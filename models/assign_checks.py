"""Checks after every assignment run, stored in ``assignment_checks`` for the report.

* Sample-ratio mismatch of the arms' counts against their weights (Pearson chi-square,
  :func:`experiments.stats.srm_test`, flagged at p < 0.001; among the arms still enrolling once
  one is stopped, :mod:`experiments.autostop`), overall and, for a stratified
  experiment, within every stratum (where permuted blocks keep the counts within one block of the
  weights, so a flag means the assignment or the data are broken). The holdout arm is left out:
  its share is the programme's, not the experiment's weights.
* Covariate balance: standardised mean differences of pre-assignment covariates between each arm
  and the baseline (:func:`experiments.stats.balance.balance_table`, flagged above 0.1), aggregated in
  SQL (:func:`models.balance_sql.covariate_statistics`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from experiments.spec import ExperimentSpec
from experiments.stats import SrmResult, srm_test
from experiments.stats.balance import balance_table
from models.arm_decisions import stopped_now
from models.assign_records import AssignmentCheck, AssignmentStratum
from models.balance_sql import covariate_statistics
from models.bulk import table
from models.records import Assignment

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class CheckSummary:
    srm_p_value: float
    srm_flagged: bool
    strata_checked: int
    strata_flagged: list[str]
    balance_flagged: list[str]


def run_checks(
    engine: Engine, experiment_id: int, spec: ExperimentSpec, now: datetime
) -> CheckSummary:
    """Run and store the checks of the experiment's current assignments."""
    arms = [arm.name for arm in spec.arms]
    a, s = table(Assignment), table(AssignmentStratum)
    rows: list[dict[str, object]] = []
    with engine.connect() as connection:
        stopped = stopped_now(connection, experiment_id, spec)
    # A stopped arm enrols nobody, by design: the ratio is checked among the arms still enrolling.
    enrolling = [arm for arm in spec.arms if arm.name not in stopped]

    def srm_row(check: str, scope: str, counts: dict[str, int]) -> bool:
        names = [arm.name for arm in enrolling]
        observed = [counts.get(name, 0) for name in names]
        if len(enrolling) >= 2:
            result = srm_test(observed, [arm.weight for arm in enrolling], SRM_THRESHOLD)
        else:
            result = SrmResult(0.0, 0, 1.0, True, tuple(float(n) for n in observed))
        detail = {"counts": counts, "expected": dict(zip(names, result.expected, strict=True))}
        rows.append(
            {
                "check": check,
                "scope": scope,
                "statistic": result.chi2,
                "p_value": result.p_value,
                "flagged": not result.ok,
                "detail": json.dumps(detail, sort_keys=True),
            }
        )
        return not result.ok

    with engine.connect() as connection:
        overall: dict[str, int] = {
            str(arm): int(count)
            for arm, count in connection.execute(
                select(a.c.arm, func.count())
                .where(a.c.experiment_id == experiment_id, a.c.arm.in_(arms))
                .group_by(a.c.arm)
            )
        }
        per_stratum: dict[str, dict[str, int]] = {}
        if spec.assignment.stratify_by:
            joined = s.join(
                a, and_(a.c.experiment_id == s.c.experiment_id, a.c.customer_id == s.c.customer_id)
            )
            for stratum, arm, count in connection.execute(
                select(s.c.stratum, a.c.arm, func.count())
                .select_from(joined)
                .where(s.c.experiment_id == experiment_id, a.c.arm.in_(arms))
                .group_by(s.c.stratum, a.c.arm)
            ):
                per_stratum.setdefault(str(stratum), {})[str(arm)] = int(count)
    flagged = srm_row("srm", "", overall)
    strata_flagged = [
        stratum
        for stratum, counts in sorted(per_stratum.items())
        if srm_row("srm_stratum", stratum, counts)
    ]
    balance_flagged: list[str] = []
    if all(overall.get(arm, 0) >= 2 for arm in arms):
        covariates = {
            name: {arm: stats for arm, stats in per_arm.items() if arm in arms}
            for name, per_arm in covariate_statistics(engine, experiment_id).items()
        }
        for row in balance_table(covariates, spec.baseline):
            values = [abs(v) for v in row.smd.values() if v is not None]
            rows.append(
                {
                    "check": "balance",
                    "scope": row.covariate,
                    "statistic": max(values) if values else None,
                    "p_value": None,
                    "flagged": row.flagged,
                    "detail": json.dumps({"means": row.means, "smd": row.smd}, sort_keys=True),
                }
            )
            if row.flagged:
                balance_flagged.append(row.covariate)
    with engine.begin() as connection:
        connection.execute(
            table(AssignmentCheck).insert(),
            [{"experiment_id": experiment_id, "checked_at": now, **row} for row in rows],
        )
    overall_row = rows[0]
    return CheckSummary(
        srm_p_value=float(overall_row["p_value"]),  # type: ignore[arg-type]
        srm_flagged=flagged,
        strata_checked=len(per_stratum),
        strata_flagged=strata_flagged,
        balance_flagged=balance_flagged,
    )
