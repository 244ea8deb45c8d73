"""source ids, customer currency, previous plan interval and MRR

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:00:00

Imports and syncs upsert by the source system's id (Stripe's ``sub_``, ``in_``, ``pm_``), so those
tables gain a nullable unique ``external_id``; customers gain their billing currency; subscriptions
keep the MRR and billing interval from before their last plan change (downgrade and
interval-shortened signals).
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_SOURCE_TABLES = ("subscriptions", "invoices", "payment_methods")


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column(
                "currency",
                sqlmodel.sql.sqltypes.AutoString(length=3),
                nullable=False,
                server_default="USD",
            )
        )
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("previous_mrr_cents", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "previous_billing_interval",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=True,
            )
        )
    for table in _SOURCE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
            )
            batch.create_unique_constraint(f"uq_{table}_external_id", ["external_id"])


def downgrade() -> None:
    for table in _SOURCE_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"uq_{table}_external_id", type_="unique")
            batch.drop_column("external_id")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("previous_billing_interval")
        batch.drop_column("previous_mrr_cents")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("currency")
