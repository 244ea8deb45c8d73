"""Retain's own records: experiments and their spec snapshots, assignments, the message outbox,
delivery events, suppressions, offer grants and evaluation results.

Uniqueness constraints carry the platform's guarantees: one assignment per experiment and customer
(no re-randomisation), one outbox row per idempotency key (no message sent twice), one delivery event
per provider event id (webhook duplicates are absorbed), one suppression per customer and channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint, false
from sqlmodel import Column, Field, SQLModel


class Experiment(SQLModel, table=True):
    __tablename__ = "experiments"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=64)
    hypothesis: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="running", max_length=16, description="running | stopped")
    spec_hash: str = Field(max_length=64, description="sha256 of the current spec snapshot")
    created_at: datetime
    updated_at: datetime


class ExperimentSnapshot(SQLModel, table=True):
    """Every distinct version of an experiment's YAML that was ever run."""

    __tablename__ = "experiment_snapshots"
    __table_args__ = (UniqueConstraint("experiment_id", "spec_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    spec_hash: str = Field(max_length=64)
    spec_yaml: str = Field(sa_column=Column(Text, nullable=False))
    source_path: str | None = Field(default=None, max_length=500)
    created_at: datetime


class Assignment(SQLModel, table=True):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("experiment_id", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    arm: str = Field(max_length=64)
    bucket: float = Field(description="the hashed position in [0, 1) that chose the arm")
    assigned_at: datetime


class Message(SQLModel, table=True):
    """The outbox: one row per message an arm schedules, sent at most once."""

    __tablename__ = "messages"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=200)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    arm: str = Field(max_length=64)
    step_index: int
    channel: str = Field(max_length=16, description="email | sms")
    template: str = Field(max_length=128)
    unless_condition: str | None = Field(default=None, max_length=64)
    scheduled_at: datetime = Field(index=True)
    status: str = Field(
        default="pending",
        max_length=16,
        index=True,
        description="pending | sending | sent | failed | skipped | withheld",
    )
    status_reason: str | None = Field(default=None, max_length=200)
    provider: str | None = Field(default=None, max_length=32)
    provider_message_id: str | None = Field(default=None, max_length=128, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_by: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(
        default=None, description="a claim held past this instant is abandoned (worker died)"
    )
    shadow: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": false()},
        description="a control customer's would-be message: decided by the policy, never sent",
    )
    sent_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryEvent(SQLModel, table=True):
    __tablename__ = "delivery_events"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int | None = Field(default=None, foreign_key="messages.id", index=True)
    provider: str = Field(max_length=32)
    provider_event_id: str = Field(unique=True, max_length=128)
    event: str = Field(max_length=32, description="delivered | bounce | open | click | ...")
    occurred_at: datetime
    payload: str = Field(sa_column=Column(Text, nullable=False))


class Suppression(SQLModel, table=True):
    """A customer who must not be contacted on a channel (unsubscribe, STOP, bounce, complaint)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("customer_id", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    channel: str = Field(max_length=16)
    reason: str = Field(max_length=32)
    source: str | None = Field(default=None, max_length=64)
    created_at: datetime


class OfferGrant(SQLModel, table=True):
    """An offer made to a customer by an experiment arm, and whether they took it."""

    __tablename__ = "offer_grants"
    __table_args__ = (UniqueConstraint("experiment_id", "customer_id", "offer_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    offer_kind: str = Field(max_length=32, description="discount | pause")
    percent_off: int | None = None
    months: int
    offered_at: datetime
    accepted_at: datetime | None = None
    cost_cents: int = 0
    code: str | None = Field(
        default=None, max_length=16, unique=True, description="the customer's own offer code"
    )


class Result(SQLModel, table=True):
    """An evaluation of an experiment: the report.json contract, stored as text."""

    __tablename__ = "results"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    computed_at: datetime
    as_of: datetime
    report_json: str = Field(sa_column=Column(Text, nullable=False))
