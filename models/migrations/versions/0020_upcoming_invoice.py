"""the upcoming invoice Stripe announces before a renewal, on the subscription

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-02 11:15:00

``invoice.upcoming`` (sent days before a subscription renews) records the amount and the time of
the coming charge, so a pre-dunning segment can select cards that expire before it.
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column("upcoming_invoice_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch.add_column(sa.Column("upcoming_invoice_cents", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("upcoming_invoice_cents")
        batch.drop_column("upcoming_invoice_at")
