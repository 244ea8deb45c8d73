"""auto-stop: the arm_decisions table

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 11:00:00

Every automatic stop of an arm, taken once per arm, with the always-valid comparison it was taken
on (metric, lift, CI, p-value, method, counts) and when.
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('arm_decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('arm', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('metric', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('compared_arm', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('baseline', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('abs_lift', sa.Float(), nullable=True),
    sa.Column('ci_low', sa.Float(), nullable=True),
    sa.Column('ci_high', sa.Float(), nullable=True),
    sa.Column('p_value', sa.Float(), nullable=True),
    sa.Column('method', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('n_arm', sa.Integer(), nullable=False),
    sa.Column('n_baseline', sa.Integer(), nullable=False),
    sa.Column('as_of', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('spec_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id', 'arm', 'action')
    )
    with op.batch_alter_table('arm_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_arm_decisions_experiment_id'), ['experiment_id'], unique=False)


def downgrade() -> None:
    op.drop_table('arm_decisions')
