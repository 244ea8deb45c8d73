"""Tables of stored daily aggregates, and the composite indexes the evaluation queries use.

Each evaluation keeps, per experiment, aggregate (a metric with its settings, the survival
tallies, the covariates), arm and assignment day, the sums of the cohorts that can no longer
change: every customer assigned that day has a matured window. The next evaluation reads them and
recomputes only the days after ``AggregateMark.final_before`` (see :mod:`models.daily_aggregates`).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.bulk import table
from models.customer_data import ActivityEvent, Invoice, PaymentMethod, Subscription
from models.records import Assignment, Message


class AggregateMark(SQLModel, table=True):
    """Up to which assignment day (exclusive) an aggregate's daily rows are final and stored."""

    __tablename__ = "aggregate_marks"
    __table_args__ = (UniqueConstraint("experiment_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id")
    key: str = Field(max_length=200, description="aggregate and the settings it depends on")
    final_before: date
    as_of: datetime = Field(description="the evaluation that last moved the mark")


class MetricDay(SQLModel, table=True):
    """Moments (see :class:`models.moments.Moments`) of one metric or covariate, arm and
    assignment day, around the stored shifts."""

    __tablename__ = "metric_days"
    __table_args__ = (UniqueConstraint("experiment_id", "key", "arm", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id")
    key: str = Field(max_length=200)
    metric: str = Field(max_length=64, description="metric or covariate name")
    arm: str = Field(max_length=64)
    day: date = Field(description="UTC day of assignment")
    n: int
    shift_y: float
    sum_y: float
    sum_y2: float
    shift_x: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0


class SurvivalDay(SQLModel, table=True):
    """Churn events and censorings per day since assignment, of one arm's assignment day."""

    __tablename__ = "survival_days"
    __table_args__ = (UniqueConstraint("experiment_id", "horizon_days", "arm", "day", "churn_day"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id")
    horizon_days: int
    arm: str = Field(max_length=64)
    day: date = Field(description="UTC day of assignment")
    churn_day: int = Field(description="day since assignment of the event or censoring")
    events: int
    censored: int


# Composite indexes for the evaluation's joins (declared here so the migration drift test sees
# them without editing the other areas' table modules).
_assignments, _messages = table(Assignment), table(Message)
EVALUATION_INDEXES = (
    Index(
        "ix_assignments_experiment_assigned",
        _assignments.c.experiment_id,
        _assignments.c.assigned_at,
        _assignments.c.customer_id,
        _assignments.c.arm,
    ),
    Index("ix_messages_experiment_customer", _messages.c.experiment_id, _messages.c.customer_id),
    Index(
        "ix_invoices_customer_paid",
        table(Invoice).c.customer_id,
        table(Invoice).c.paid_at,
    ),
    Index(
        "ix_subscriptions_customer_canceled",
        table(Subscription).c.customer_id,
        table(Subscription).c.canceled_at,
    ),
    # Partial: only the canceled tenth, so both planners see how few rows a range holds.
    Index(
        "ix_subscriptions_canceled_customer",
        table(Subscription).c.canceled_at,
        table(Subscription).c.customer_id,
        sqlite_where=table(Subscription).c.canceled_at.is_not(None),
        postgresql_where=table(Subscription).c.canceled_at.is_not(None),
    ),
    Index(
        "ix_payment_methods_customer_created",
        table(PaymentMethod).c.customer_id,
        table(PaymentMethod).c.created_at,
    ),
    Index(
        "ix_activity_events_customer_kind_occurred",
        table(ActivityEvent).c.customer_id,
        table(ActivityEvent).c.kind,
        table(ActivityEvent).c.occurred_at,
    ),
)
