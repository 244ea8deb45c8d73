"""Tables of the churn-risk model: the fitted models (with their training window) and the scores
they gave customers as of a moment. ``churn_risk`` and ``churn_risk_decile`` in segment rules read
the latest score at or before the rule's ``as_of``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel


class RiskModel(SQLModel, table=True):
    """One fitted churn-risk model: logistic regression on features as of monthly snapshots."""

    __tablename__ = "risk_models"

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(unique=True, max_length=64)
    horizon_days: int = Field(description="label: churned within this many days of a snapshot")
    train_start: datetime = Field(description="first training snapshot")
    train_end: datetime = Field(description="last training snapshot")
    holdout_start: datetime | None = Field(default=None, description="first held-out snapshot")
    holdout_end: datetime | None = Field(default=None, description="last held-out snapshot")
    n_train: int
    n_holdout: int = 0
    auc_holdout: float | None = None
    trained_at: datetime
    model_json: str = Field(
        sa_column=Column(Text, nullable=False), description="design and coefficients (JSON)"
    )


class RiskScore(SQLModel, table=True):
    """A customer's churn probability as of a moment, from one model."""

    __tablename__ = "risk_scores"
    __table_args__ = (UniqueConstraint("model_id", "as_of", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="risk_models.id", index=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    as_of: datetime = Field(index=True)
    churn_risk: float
    decile: int = Field(description="1 (lowest risk) to 10 among the customers scored together")
