"""Scheduling in set-based SQL: one ``INSERT ... SELECT`` of outbox rows for every arm step.

The idempotency key ``<experiment>:<customer>:<arm>:<step>`` (as :mod:`models.experiments` makes
it) makes re-scheduling a no-op; the holdout arm has no steps, so it is never messaged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, cast, func, literal, select, union_all
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
    and neither does a stopped arm (:mod:`experiments.autostop`).

    One statement for all arms and steps: the experiment's assignments are joined to the
    customers once and to a small table of (arm, step) rows, so the database scans them once
    however many steps the arms have (a statement per step scanned them once per step)."""
    messages, assignments, customers = table(Message), table(Assignment), table(Customer)
    mine = select(func.count()).where(messages.c.experiment_id == experiment_id)
    with engine.begin() as connection:
        before = connection.execute(mine).scalar_one()
        stopped = stopped_now(connection, experiment_id, spec)
        shadow_steps = spec.shadow_steps()
        rows = [
            # An arm without steps (a control) gets shadow rows at the other arms' touch points:
            # the policy decides them like real messages, and they are never sent.
            select(
                literal(arm.name, String).label("arm"),
                literal(arm_order, Integer).label("arm_order"),
                literal(index, Integer).label("step_index"),
                literal(step.channel, String).label("channel"),
                literal(step.template, String).label("template"),
                literal(step.unless, String).label("unless_condition"),
                literal(int(step.at.total_seconds()), Integer).label("seconds"),
                literal(not arm.steps, Boolean).label("shadow"),
            )
            for arm_order, arm in enumerate(spec.arms)
            if arm.name not in stopped
            for index, step in enumerate(arm.steps or shadow_steps)
        ]
        if not rows:
            return 0
        steps = union_all(*rows).subquery("steps")
        key = (
            literal(f"{spec.key}:")
            + customers.c.external_id
            + literal(":")
            + steps.c.arm
            + literal(":")
            + cast(steps.c.step_index, String)
        )
        query = (
            select(
                key,
                assignments.c.experiment_id,
                assignments.c.customer_id,
                steps.c.arm,
                steps.c.step_index,
                steps.c.channel,
                steps.c.template,
                steps.c.unless_condition,
                _plus_seconds(connection, assignments.c.assigned_at, steps.c.seconds),
                literal("pending"),
                literal(0, Integer),
                steps.c.shadow,
                literal(now, messages.c.created_at.type),
                literal(now, messages.c.updated_at.type),
            )
            .select_from(
                assignments.join(customers, customers.c.id == assignments.c.customer_id).join(
                    steps, steps.c.arm == assignments.c.arm
                )
            )
            .where(assignments.c.experiment_id == experiment_id)
            # Ids in the same order on every database: arm by arm, step by step, customer by
            # customer in assignment order (the order a statement per step used to give).
            .order_by(steps.c.arm_order, steps.c.step_index, assignments.c.id)
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


def _plus_seconds(connection: Connection, at: Any, seconds: Any) -> ColumnElement[Any]:
    """``at + seconds`` (an integer column) stored as the column's type stores it."""
    if connection.dialect.name == "sqlite":
        # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff'; datetime() keeps the seconds only.
        shift = literal("+") + cast(seconds, String) + literal(" seconds")
        shifted = func.datetime(at, shift, type_=String)
        return shifted.op("||")(func.substr(at, 20, type_=String))
    return at + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
