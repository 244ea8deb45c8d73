"""What ``retain status`` shows of each experiment from the database: its state, how many customers
are assigned, where its messages stand and its latest evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.bulk import table
from models.records import Assignment, Experiment, Message, Result


@dataclass(frozen=True)
class ExperimentOverview:
    key: str
    status: str
    assigned: int
    messages: dict[str, int]
    last_evaluated: datetime | None
    headline: str


def _headline(report_json: str) -> str:
    """One line about the primary metric of a stored report.json: the arms significantly different
    from the baseline under the report's headline method, or that none is yet."""
    report = json.loads(report_json)
    primary = next((m for m in report.get("metrics", []) if m.get("role") == "primary"), None)
    if primary is None:
        return "no primary metric"
    winners = [
        f"{c['arm']} {c['abs_lift']:+.4g}"
        for c in primary.get("comparisons", [])
        if c.get("significant") and c.get("abs_lift") is not None
    ]
    name = primary.get("name", "primary")
    return f"{name}: " + (", ".join(winners) if winners else "no significant difference yet")


def experiment_overview(engine: Engine) -> list[ExperimentOverview]:
    """Every registered experiment, by key, with its counts and latest result (three grouped
    queries and one per experiment for its newest result)."""
    experiments, assignments = table(Experiment).c, table(Assignment).c
    outbox, results = table(Message).c, table(Result).c
    with engine.connect() as connection:
        rows = connection.execute(
            select(experiments.id, experiments.key, experiments.status).order_by(experiments.key)
        ).all()
        assigned: dict[int, int] = {
            experiment_id: count
            for experiment_id, count in connection.execute(
                select(assignments.experiment_id, func.count()).group_by(assignments.experiment_id)
            )
        }
        messages: dict[int, dict[str, int]] = {}
        for experiment_id, status, count in connection.execute(
            select(outbox.experiment_id, outbox.status, func.count()).group_by(
                outbox.experiment_id, outbox.status
            )
        ):
            messages.setdefault(experiment_id, {})[status] = count
        overview = []
        for experiment_id, key, status in rows:
            latest = connection.execute(
                select(results.computed_at, results.report_json)
                .where(results.experiment_id == experiment_id)
                .order_by(results.computed_at.desc(), results.id.desc())
                .limit(1)
            ).first()
            overview.append(
                ExperimentOverview(
                    key=key,
                    status=status,
                    assigned=assigned.get(experiment_id, 0),
                    messages=messages.get(experiment_id, {}),
                    last_evaluated=latest[0] if latest else None,
                    headline=_headline(latest[1]) if latest else "not evaluated yet",
                )
            )
    return overview
