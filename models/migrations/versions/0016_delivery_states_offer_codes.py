"""message delivery states from webhooks; offer codes on offer grants

Revision ID: 0016
Revises: 0012
Create Date: 2026-12-02 08:00:00

Delivery webhooks (SendGrid Event Webhook, Twilio status callbacks) move each sent message along
``message_deliveries`` (one row per message: accepted, delivered, bounced, opened, clicked, ...);
offer grants carry the customer's own offer code (unique).
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0016'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_deliveries",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("provider_status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("opened_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("clicked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"]),
        sa.PrimaryKeyConstraint("message_id"),
    )
    with op.batch_alter_table("offer_grants") as batch:
        batch.add_column(sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch.create_unique_constraint("uq_offer_grants_code", ["code"])


def downgrade() -> None:
    with op.batch_alter_table("offer_grants") as batch:
        batch.drop_constraint("uq_offer_grants_code", type_="unique")
        batch.drop_column("code")
    op.drop_table("message_deliveries")
