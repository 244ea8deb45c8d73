"""churn-risk models and scores

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:30:00

The fitted churn-risk models (training window, horizon, held-out AUC, design and coefficients as
JSON) and the scores they gave customers as of a moment (``churn_risk``, ``churn_risk_decile``).
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("train_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("train_end", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("holdout_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("holdout_end", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_holdout", sa.Integer(), nullable=False),
        sa.Column("auc_holdout", sa.Float(), nullable=True),
        sa.Column("trained_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("model_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )
    op.create_table(
        "risk_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("as_of", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("churn_risk", sa.Float(), nullable=False),
        sa.Column("decile", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"]),
        sa.ForeignKeyConstraint(["model_id"], ["risk_models.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "as_of", "customer_id"),
    )
    op.create_index("ix_risk_scores_model_id", "risk_scores", ["model_id"])
    op.create_index("ix_risk_scores_customer_id", "risk_scores", ["customer_id"])
    op.create_index("ix_risk_scores_as_of", "risk_scores", ["as_of"])


def downgrade() -> None:
    op.drop_index("ix_risk_scores_as_of", table_name="risk_scores")
    op.drop_index("ix_risk_scores_customer_id", table_name="risk_scores")
    op.drop_index("ix_risk_scores_model_id", table_name="risk_scores")
    op.drop_table("risk_scores")
    op.drop_table("risk_models")
