"""The dispatcher's own records: one row per provider attempt, written (with the message marked in
flight) in the same transaction before the provider is called, and completed with the outcome.

An attempt without an outcome is one whose result nobody saw (the process died, or the call timed
out): it holds what reconciliation asks the provider about (the address and the body's sha256),
and the outcome reconciliation found. Unique per (message, attempt number).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class SendAttempt(SQLModel, table=True):
    __tablename__ = "send_attempts"
    __table_args__ = (UniqueConstraint("message_id", "attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="messages.id", index=True)
    attempt: int
    worker: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=320)
    body_sha256: str = Field(max_length=64)
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = Field(
        default=None,
        max_length=32,
        description="sent | retry | failed | unknown | not_attempted | found | absent",
    )
    provider_message_id: str | None = Field(default=None, max_length=128)
    error_code: str | None = Field(default=None, max_length=32)
