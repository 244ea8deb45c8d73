"""Simulated outcomes and counts for the auto-stop tests: planted card updates and unsubscribes
per arm (seeded), and what the database holds per arm."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.arm_decisions import ArmDecision
from models.assign_records import AssignmentExclusion
from models.bulk import table
from models.customer_data import Customer, PaymentMethod
from models.records import Assignment, Message, Suppression


def arms_of(engine: Engine) -> dict[int, str]:
    """customer id -> arm, over every experiment (the tests run one)."""
    a = table(Assignment)
    with engine.connect() as connection:
        return {int(c): str(arm) for c, arm in connection.execute(select(a.c.customer_id, a.c.arm))}


def plant(
    engine: Engine,
    rates: Mapping[str, float],
    at: datetime,
    *,
    seed: int,
    kind: str,
) -> dict[str, int]:
    """Give each assigned customer of an arm, with that arm's probability, a new card (``kind``
    ``card``) or an unsubscribe from email (``unsubscribe``) at ``at``; returns how many per arm."""
    rng = random.Random(seed)
    planted: Counter[str] = Counter()
    with Session(engine) as session:
        for customer_id, arm in sorted(arms_of(engine).items()):
            if rng.random() >= rates.get(arm, 0.0):
                continue
            planted[arm] += 1
            if kind == "card":
                session.add(
                    PaymentMethod(
                        customer_id=customer_id,
                        last4="4242",
                        exp_month=12,
                        exp_year=2030,
                        expires_on=date(2030, 12, 31),
                        created_at=at,
                    )
                )
            else:
                session.add(
                    Suppression(
                        customer_id=customer_id,
                        channel="email",
                        reason="unsubscribe",
                        created_at=at,
                    )
                )
        session.commit()
    return dict(planted)


def decisions(engine: Engine) -> list[tuple[str, str, str]]:
    """(arm, reason, compared arm) of every recorded decision, by arm."""
    d = table(ArmDecision)
    with engine.connect() as connection:
        rows = connection.execute(select(d.c.arm, d.c.reason, d.c.compared_arm).order_by(d.c.arm))
        return [(str(a), str(r), str(c)) for a, r, c in rows]


def exclusions(engine: Engine, reason: str) -> set[str]:
    """External ids of the customers excluded for ``reason``."""
    x, c = table(AssignmentExclusion), table(Customer)
    query = select(c.c.external_id).join(x, x.c.customer_id == c.c.id).where(x.c.reason == reason)
    with engine.connect() as connection:
        return {str(e) for e in connection.execute(query).scalars()}


def assigned_units(engine: Engine) -> dict[str, str]:
    """External id -> arm of every assigned customer."""
    a, c = table(Assignment), table(Customer)
    query = select(c.c.external_id, a.c.arm).join(a, a.c.customer_id == c.c.id)
    with engine.connect() as connection:
        return {str(e): str(arm) for e, arm in connection.execute(query)}


def messages_by(
    engine: Engine, *, status: str | None = None, reason: str | None = None
) -> Counter[str]:
    """Outbox rows per arm, optionally of one status and reason."""
    m = table(Message)
    query = select(m.c.arm, func.count()).group_by(m.c.arm)
    if status is not None:
        query = query.where(m.c.status == status)
    if reason is not None:
        query = query.where(m.c.status_reason == reason)
    with engine.connect() as connection:
        return Counter({str(arm): int(n) for arm, n in connection.execute(query)})
