"""Registration, sticky assignment and outbox scheduling against the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from experiments.loader import parse_spec
from models.experiments import (
    ExperimentChangeError,
    assign_customers,
    register_experiment,
    registered_spec,
    schedule_messages,
)
from models.records import Assignment, ExperimentSnapshot, Message
from tests.dbdata import T0, add_customers

SPEC = """\
key: reminder
hypothesis: Reminders help.
segment: {where: card_expires_in_days <= 30}
assignment: {salt: reminder-1}
arms:
  - {name: control, weight: 1}
  - name: email_sms
    weight: 1
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 3d, channel: sms, template: card_expiry_sms, unless: payment_method_updated}
metrics: {primary: card_updated_14d}
"""


def count(engine: Engine, table: type, **where: object) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(getattr(table, column) == value)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def test_rerun_neither_rerandomises_nor_reschedules(engine: Engine) -> None:
    ids = add_customers(engine, 60)
    loaded = parse_spec(SPEC, "reminder.yaml")
    reg = register_experiment(engine, loaded, T0)
    assert reg.created and reg.new_snapshot
    first = assign_customers(engine, reg.experiment_id, loaded.spec, ids[:40], T0)
    assert first.new == 40 and sum(first.by_arm.values()) == 40
    scheduled = schedule_messages(engine, reg.experiment_id, loaded.spec, T0)
    treated = first.by_arm.get("email_sms", 0)
    # Treated customers get their two steps; control customers two shadow rows at the same
    # touch points (decided by the policy, never sent).
    assert scheduled == 2 * 40
    assert count(engine, Message, shadow=False) == 2 * treated
    assert count(engine, Message, shadow=True, arm="control") == 2 * (40 - treated)
    with engine.connect() as connection:
        before = dict(connection.execute(select(Assignment.customer_id, Assignment.arm)).all())

    # The same run again, later, with a larger segment: only the 20 new customers are assigned.
    later = T0 + timedelta(days=1)
    again = register_experiment(engine, loaded, later)
    assert not again.created and not again.new_snapshot
    second = assign_customers(engine, reg.experiment_id, loaded.spec, ids, later)
    assert second.new == 20 and second.already_assigned == 40
    assert schedule_messages(engine, reg.experiment_id, loaded.spec, later) == 2 * second.new
    assert schedule_messages(engine, reg.experiment_id, loaded.spec, later) == 0
    with engine.connect() as connection:
        after = dict(connection.execute(select(Assignment.customer_id, Assignment.arm)).all())
    assert all(after[c] == arm for c, arm in before.items())
    assert count(engine, Assignment) == 60
    assert count(engine, Message) == 2 * 60
    treated_now = sum(1 for arm in after.values() if arm == "email_sms")
    assert count(engine, Message, shadow=False) == 2 * treated_now


def test_scheduled_rows_follow_the_steps(engine: Engine) -> None:
    ids = add_customers(engine, 10)
    loaded = parse_spec(SPEC, "reminder.yaml")
    reg = register_experiment(engine, loaded, T0)
    assign_customers(engine, reg.experiment_id, loaded.spec, ids, T0)
    schedule_messages(engine, reg.experiment_id, loaded.spec, T0)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                Message.idempotency_key,
                Message.channel,
                Message.scheduled_at,
                Message.unless_condition,
                Message.status,
                Message.shadow,
            ).order_by(Message.idempotency_key)
        ).all()
    assert {r.shadow for r in rows} == {True, False}, "both arms should have customers"
    for key, channel, scheduled_at, unless, status, shadow in rows:
        _, external, arm, step = key.split(":")
        assert external.startswith("cus_") and status == "pending"
        assert arm == ("control" if shadow else "email_sms")
        if step == "0":
            assert channel == "email" and scheduled_at == T0 and unless is None
        else:
            assert channel == "sms" and scheduled_at == T0 + timedelta(days=3)
            assert unless == "payment_method_updated"


def test_changing_arms_of_a_running_experiment_is_refused(engine: Engine) -> None:
    ids = add_customers(engine, 5)
    loaded = parse_spec(SPEC, "reminder.yaml")
    reg = register_experiment(engine, loaded, T0)
    assign_customers(engine, reg.experiment_id, loaded.spec, ids, T0)

    reweighted = parse_spec(
        SPEC.replace("{name: control, weight: 1}", "{name: control, weight: 3}"), "r.yaml"
    )
    assert reweighted.spec.arms[0].weight == 3
    with pytest.raises(ExperimentChangeError, match="would move them between arms"):
        register_experiment(engine, reweighted, T0)

    # A change that does not touch randomisation is recorded as a new snapshot.
    reworded = parse_spec(SPEC.replace("Reminders help.", "Reminders help a lot."), "r.yaml")
    assert register_experiment(engine, reworded, T0).new_snapshot
    assert count(engine, ExperimentSnapshot) == 2
    _, current = registered_spec(engine, "reminder")
    assert current.spec.hypothesis == "Reminders help a lot."
