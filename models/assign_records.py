"""Tables of rigorous assignment: layer ranges, strata and positions, exclusions with their reason,
and the checks run after every assignment (sample-ratio mismatch, covariate balance).

The arms themselves stay in ``assignments`` (``models.records``); the global holdout is an arm
there named ``holdout``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel


class LayerAllocation(SQLModel, table=True):
    """The fixed range ``[start, end)`` of a layer's hash an experiment owns (given at its first
    run, never moved: moving it would move customers between experiments)."""

    __tablename__ = "layer_allocations"
    __table_args__ = (UniqueConstraint("layer", "experiment_id"),)

    id: int | None = Field(default=None, primary_key=True)
    layer: str = Field(max_length=64, index=True)
    experiment_id: int = Field(foreign_key="experiments.id")
    share: float
    start: float
    end: float
    created_at: datetime


class AssignmentStratum(SQLModel, table=True):
    """The stratum an assigned customer was in when assigned, and their position in it (1-based;
    null for the holdout arm). Positions make stratified assignment sticky: a later run continues
    each stratum's count."""

    __tablename__ = "assignment_strata"
    __table_args__ = (UniqueConstraint("experiment_id", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    customer_id: int = Field(foreign_key="customers.id")
    stratum: str = Field(max_length=500)
    position: int | None = None


class AssignmentExclusion(SQLModel, table=True):
    """A segment member who was not treated, and why, decided at assignment time.

    ``reason``: ``in_other_experiment`` (already assigned elsewhere and the segment excludes
    them), ``in_other_layer_experiment`` (their layer position belongs to another experiment of the
    layer), ``outside_layer_share`` (their layer position is in no experiment's range yet),
    ``no_consent`` (no channel may reach them), ``holdout`` (in the global holdout: assigned to
    the ``holdout`` arm, never messaged), ``arm_stopped`` (the arm their hash gives is stopped:
    :mod:`experiments.autostop`). The first decision is kept; a customer excluded once and
    assigned later keeps no row.
    """

    __tablename__ = "assignment_exclusions"
    __table_args__ = (UniqueConstraint("experiment_id", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    customer_id: int = Field(foreign_key="customers.id")
    reason: str = Field(max_length=32)
    decided_at: datetime


class AssignmentCheck(SQLModel, table=True):
    """One check after an assignment run: ``srm`` (overall), ``srm_stratum`` (one stratum) or
    ``balance`` (one covariate); ``detail`` is JSON (counts and expected counts, or means and
    SMDs)."""

    __tablename__ = "assignment_checks"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    checked_at: datetime
    check: str = Field(max_length=16)
    scope: str = Field(max_length=500, description="stratum or covariate; '' for overall")
    statistic: float | None = None
    p_value: float | None = None
    flagged: bool
    detail: str = Field(sa_column=Column(Text, nullable=False))
