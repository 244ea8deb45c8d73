"""The import area's own records: one row per import run, the Stripe sync cursors and every Stripe
webhook event received (stored once by its id)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel


class ImportRun(SQLModel, table=True):
    """One import of one file, query or Stripe resource, with what it changed."""

    __tablename__ = "import_runs"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(
        max_length=500, description="file path, redacted SQL URL or stripe:<resource>"
    )
    entity: str = Field(max_length=32)
    sha256: str | None = Field(default=None, max_length=64, description="of the file's bytes")
    status: str = Field(max_length=16, description="applied | rejected (structurally wrong)")
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    started_at: datetime
    finished_at: datetime


class SyncCursor(SQLModel, table=True):
    """How far a sync has read a source's resource: the largest ``created`` (Unix seconds) seen."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("source", "resource"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)
    resource: str = Field(max_length=64)
    created_cursor: int
    updated_at: datetime


class StripeEvent(SQLModel, table=True):
    """A Stripe webhook event, stored once by its id (Stripe delivers some twice)."""

    __tablename__ = "stripe_events"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=255)
    type: str = Field(max_length=64)
    object_id: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(description="when Stripe created the event")
    received_at: datetime
    outcome: str = Field(max_length=200, description="what applying it did")
    payload: str = Field(sa_column=Column(Text, nullable=False))
