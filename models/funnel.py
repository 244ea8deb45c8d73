"""Per arm, how many assigned customers reached each messaging stage: eligible (some message was
not ruled out by address, consent or suppression), sent, delivered, opened or clicked; from the
outbox's statuses and the delivery events, in one grouped query.

A control arm's messages are the dispatcher's "would have sent" records (``withheld``), so its
sent stage counts what would have gone out; an arm with no outbox rows at all has ``None`` for the
message stages, and the delivery stages are ``None`` everywhere until some delivery event
of the experiment exists: the report then shows what exists and leaves the rest empty.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, and_, case, cast, exists, func, literal, not_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from experiments.metrics import CATALOGUE
from experiments.report.enrich import FunnelCounts
from experiments.spec import Costs
from experiments.stats import SampleStats
from models.bulk import table
from models.metric_sql import ASSIGNMENTS, Window, window_statistics
from models.records import DeliveryEvent, Message
from models.sqltime import days_between

# Skip reasons that mean the customer could not be reached on that channel at all.
INELIGIBLE = ("no_address", "no_consent", "suppressed")
ENGAGED = ("open", "opened", "click", "clicked")
# A control customer's eligible would-be message is recorded ``withheld``: its "sent" stage.
SENT = ("sent", "withheld")


def _one(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def funnel_counts(engine: Engine, experiment_id: int) -> dict[str, FunnelCounts]:
    """Per arm, the customers at each stage of the messaging funnel.

    The experiment's messages (and their delivery events) are first reduced to one row of stage
    flags per customer, then joined to the assignments and summed per arm: each table is read
    once, not once per assigned customer and stage."""
    a, m, d = ASSIGNMENTS, table(Message), table(DeliveryEvent)
    reachable = not_(and_(m.c.status == "skipped", m.c.status_reason.in_(INELIGIBLE)))
    stages = (
        select(
            m.c.customer_id,
            func.max(_one(reachable)).label("eligible"),
            func.max(_one(m.c.status.in_(SENT))).label("sent"),
        )
        .where(m.c.experiment_id == experiment_id)
        .group_by(m.c.customer_id)
        .subquery("stages")
    )
    events = (
        select(
            m.c.customer_id,
            func.max(_one(d.c.event == "delivered")).label("delivered"),
            func.max(_one(d.c.event.in_(ENGAGED))).label("engaged"),
        )
        .select_from(d.join(m, m.c.id == d.c.message_id))
        .where(m.c.experiment_id == experiment_id)
        .group_by(m.c.customer_id)
        .subquery("events")
    )
    query = (
        select(
            a.c.arm,
            func.count(),
            func.count(stages.c.customer_id),
            func.coalesce(func.sum(stages.c.eligible), 0),
            func.coalesce(func.sum(stages.c.sent), 0),
            func.coalesce(func.sum(events.c.delivered), 0),
            func.coalesce(func.sum(events.c.engaged), 0),
            func.count(events.c.customer_id),
        )
        .select_from(
            a.outerjoin(stages, stages.c.customer_id == a.c.customer_id).outerjoin(
                events, events.c.customer_id == a.c.customer_id
            )
        )
        .where(a.c.experiment_id == experiment_id)
        .group_by(a.c.arm)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    has_events = any(row[7] for row in rows)
    result = {}
    for arm, assigned, messaged, eligible, sent, delivered, engaged, _ in rows:
        has_rows = bool(messaged)
        result[arm] = FunnelCounts(
            assigned=int(assigned),
            eligible=int(eligible) if has_rows else None,
            sent=int(sent) if has_rows else None,
            delivered=int(delivered) if has_rows and has_events else None,
            engaged=int(engaged) if has_rows and has_events else None,
        )
    return result


def sent_statistics(
    engine: Engine, experiment_id: int, metric: str, as_of: datetime, costs: Costs | None = None
) -> dict[str, SampleStats]:
    """Per-protocol: the metric's sufficient statistics per arm over the counted customers who were
    sent at least one message (biased by who can be reached; never the headline)."""
    a, m = ASSIGNMENTS, table(Message)
    window = Window(as_of=as_of, days=CATALOGUE[metric].window_days, costs=costs or Costs())
    sent = exists().where(
        m.c.experiment_id == experiment_id,
        m.c.customer_id == a.c.customer_id,
        m.c.status == "sent",
    )
    matured = days_between(literal(as_of, a.c.assigned_at.type), a.c.assigned_at) >= cast(
        literal(window.days), Float
    )
    return window_statistics(
        engine, metric, window, and_(a.c.experiment_id == experiment_id, matured, sent)
    )
