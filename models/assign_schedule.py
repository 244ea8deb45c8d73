"""Scheduling in set-based SQL: one ``INSERT ... SELECT`` of outbox rows per arm step.

The idempotency key ``<experiment>:<customer>:<arm>:<step>`` (as :mod:`models.experiments` makes
it) makes re-scheduling a no-op; the holdout arm has no steps, so it is never messaged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement

from experiments.spec import ExperimentSpec
from models.arm_decisions import stopped_now
from models.bulk import table
from models.customer_data import Customer
from models.records import Assignment, Message


def schedule_messages_sql(
    engine: Engine, experiment_id: int, spec: ExperimentSpec, now: datetime
) -> int:
    """Outbox rows for every step of every assigned customer's arm, with ``INSERT ... SELECT``;
    returns rows added. The idempotency key ``<experiment>:<customer>:<arm>:<step>`` makes
    re-scheduling a no-op. Arms without steps get ``shadow`` rows at the other arms' touch points
    (intent-to-treat, never sent); the global holdout is not an arm of the spec, so it gets none,
    and neither does a stopped arm (:mod:`experiments.autostop`)."""
    messages, assignments, customers = table(Message), table(Assignment), table(Customer)
    mine = select(func.count()).where(messages.c.experiment_id == experiment_id)
    with engine.begin() as connection:
        before = connection.execute(mine).scalar_one()
        shadow_steps = spec.shadow_steps()
        stopped = stopped_now(connection, experiment_id, spec)
        for arm in (arm for arm in spec.arms if arm.name not in stopped):
            # An arm without steps (a control) gets shadow rows at the other arms' touch points:
            # the policy decides them like real messages, and they are never sent.
            shadow = not arm.steps
            for index, step in enumerate(shadow_steps if shadow else arm.steps):
                key = (
                    literal(f"{spec.key}:")
                    + customers.c.external_id
                    + literal(f":{arm.name}:{index}")
                )
                seconds = int(step.at.total_seconds())
                query = (
                    select(
                        key,
                        assignments.c.experiment_id,
                        assignments.c.customer_id,
                        literal(arm.name),
                        literal(index, Integer),
                        literal(step.channel),
                        literal(step.template),
                        literal(step.unless, String),
                        _plus_seconds(connection, assignments.c.assigned_at, seconds),
                        literal("pending"),
                        literal(0, Integer),
                        literal(shadow, Boolean),
                        literal(now, messages.c.created_at.type),
                        literal(now, messages.c.updated_at.type),
                    )
                    .select_from(
                        assignments.join(customers, customers.c.id == assignments.c.customer_id)
                    )
                    .where(
                        assignments.c.experiment_id == experiment_id,
                        assignments.c.arm == arm.name,
                    )
                )
                module: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
                statement = (
                    module.insert(messages)
                    .from_select(
                        [
                            "idempotency_key",
                            "experiment_id",
                            "customer_id",
                            "arm",
                            "step_index",
                            "channel",
                            "template",
                            "unless_condition",
                            "scheduled_at",
                            "status",
                            "attempts",
                            "shadow",
                            "created_at",
                            "updated_at",
                        ],
                        query,
                    )
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                )
                connection.execute(statement)
        # rowcount of INSERT ... SELECT ... ON CONFLICT is not reliable on every driver
        return int(connection.execute(mine).scalar_one() - before)


def _plus_seconds(connection: Connection, at: Any, seconds: int) -> ColumnElement[Any]:
    """``at + seconds`` stored as the column's type stores it."""
    if connection.dialect.name == "sqlite":
        # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff'; datetime() keeps the seconds only.
        shifted = func.datetime(at, literal(f"+{seconds} seconds"), type_=String)
        return shifted.op("||")(func.substr(at, 20, type_=String))
    return at + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
