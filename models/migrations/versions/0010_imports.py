"""imports: import runs, sync cursors, Stripe events; updated_at and source versions

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-02 07:20:00

Imports, the Stripe sync and Stripe webhooks record each run, how far each Stripe resource was
read and every webhook event (once by id). Customer tables gain ``updated_at`` (when an import last
changed the row) and, where webhooks write, ``source_updated_at`` (the source's version, so an
older event arriving late never overwrites a newer state); activity events gain a source id so a
re-imported events file changes nothing.
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0007'
branch_labels = None
depends_on = None

_UPDATED = ("customers", "subscriptions", "invoices", "payment_methods")
_VERSIONED = ("subscriptions", "invoices", "payment_methods")


def upgrade() -> None:
    op.create_table(
        "import_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("entity", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("resource", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_cursor", sa.Integer(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "resource"),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("object_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    for table in _UPDATED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
            if table in _VERSIONED:
                batch.add_column(
                    sa.Column("source_updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
                )
    with op.batch_alter_table("activity_events") as batch:
        batch.add_column(
            sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
        batch.create_unique_constraint("uq_activity_events_external_id", ["external_id"])


def downgrade() -> None:
    with op.batch_alter_table("activity_events") as batch:
        batch.drop_constraint("uq_activity_events_external_id", type_="unique")
        batch.drop_column("external_id")
    for table in _UPDATED:
        with op.batch_alter_table(table) as batch:
            if table in _VERSIONED:
                batch.drop_column("source_updated_at")
            batch.drop_column("updated_at")
    op.drop_table("stripe_events")
    op.drop_table("sync_cursors")
    op.drop_table("import_runs")
