"""Turn an experiment's recorded data into a report: sufficient statistics per arm from SQL (metric
sums, CUPED cross-products, time-to-churn counts, pre-assignment covariates), then the pure
statistics engine and report rendering."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from experiments.analysis import AnalysisSettings, MetricInput, SurvivalInput, build_report
from experiments.metrics import CATALOGUE
from experiments.report.enrich import enrich
from experiments.report.models import Report
from experiments.spec import ExperimentSpec
from experiments.stats import SampleStats
from models.arm_decisions import auto_stop
from models.daily_aggregates import covariate_statistics, metric_statistics, survival_statistics
from models.moments import Moments
from models.records import Result
from models.report_data import report_context


def evaluate(
    engine: Engine,
    experiment_id: int,
    spec: ExperimentSpec,
    as_of: datetime,
    computed_at: datetime,
    planted: Mapping[tuple[str, str], float] | None = None,
) -> Report:
    """Aggregate every metric of the spec per arm in SQL and build the report; the report is also
    stored in the ``results`` table.

    The per-arm sums of cohorts that can no longer change are stored by assignment day and reused
    by the next evaluation (:mod:`models.daily_aggregates`), so a daily evaluation aggregates only
    the customers whose windows matured since."""
    analysis = spec.analysis
    costs = analysis.costs
    arms = [arm.name for arm in spec.arms]
    empty = SampleStats(n=0, sum=0.0, sum_squares=0.0)
    inputs = []
    names = {arm.name for arm in spec.arms}
    every_arm: dict[str, dict[str, Moments]] = {}  # the holdout's arm too, for its comparison
    for name, role in spec.metrics.roles():
        paired = None
        # One pass gives both the outcome's sums and the cross-products with the pre-period.
        lookback = (
            float(analysis.cuped_lookback_days or CATALOGUE[name].window_days)
            if analysis.cuped
            else None
        )
        moments = metric_statistics(
            engine, experiment_id, name, as_of, arms, costs=costs, lookback_days=lookback
        )
        every_arm[name] = moments
        # Only the spec's arms: the global holdout's arm is not one of the experiment's.
        moments = {arm: m for arm, m in moments.items() if arm in names}
        stats = {arm: m.sample() for arm, m in moments.items()}
        if analysis.cuped and set(moments) == set(arms):
            paired = {arm: m.paired() for arm, m in moments.items()}
        definition = CATALOGUE[name]
        inputs.append(
            MetricInput(
                name=name,
                kind=definition.kind,
                role=role,
                description=definition.description,
                arm_stats={arm.name: stats.get(arm.name, empty) for arm in spec.arms},
                paired=paired,
            )
        )
    horizon = analysis.survival_horizon_days
    report = build_report(
        experiment=spec.key,
        hypothesis=spec.hypothesis,
        computed_at=computed_at,
        as_of=as_of,
        alpha=analysis.alpha,
        baseline=spec.baseline,
        arm_weights={arm.name: arm.weight for arm in spec.arms},
        metrics=inputs,
        planted=planted,
        settings=AnalysisSettings.from_spec(analysis),
        survival=SurvivalInput(survival_statistics(engine, experiment_id, as_of, horizon), horizon),
        balance={
            covariate: {arm: s for arm, s in per_arm.items() if arm in names}
            for covariate, per_arm in covariate_statistics(
                engine, experiment_id, as_of, arms
            ).items()
        },
    )
    # Auto-stop reads the statistics and records its decisions before the report shows them.
    report, _ = auto_stop(engine, experiment_id, spec, report, as_of, computed_at)
    context = report_context(engine, experiment_id, spec, report, as_of, moments=every_arm)
    report = enrich(report, context)
    with Session(engine) as session:
        session.add(
            Result(
                experiment_id=experiment_id,
                computed_at=computed_at,
                as_of=as_of,
                report_json=json.dumps(report.model_dump(mode="json")),
            )
        )
        session.commit()
    return report
