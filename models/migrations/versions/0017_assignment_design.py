"""rigorous assignment: layer ranges, strata, exclusions and checks

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 07:30:00

Layers give experiments fixed, disjoint ranges of a layer hash (mutual exclusion); stratified
experiments record each customer's stratum and position; every segment member who was not treated
is recorded with the reason; every run stores its sample-ratio and balance checks.
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('layer_allocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('layer', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('share', sa.Float(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('layer', 'experiment_id')
    )
    with op.batch_alter_table('layer_allocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_layer_allocations_layer'), ['layer'], unique=False)

    op.create_table('assignment_strata',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('stratum', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('position', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id', 'customer_id')
    )
    with op.batch_alter_table('assignment_strata', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignment_strata_experiment_id'), ['experiment_id'], unique=False)

    op.create_table('assignment_exclusions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], ),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id', 'customer_id')
    )
    with op.batch_alter_table('assignment_exclusions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignment_exclusions_experiment_id'), ['experiment_id'], unique=False)

    op.create_table('assignment_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('checked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('check', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('statistic', sa.Float(), nullable=True),
    sa.Column('p_value', sa.Float(), nullable=True),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('assignment_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignment_checks_experiment_id'), ['experiment_id'], unique=False)


def downgrade() -> None:
    for name in ('assignment_checks', 'assignment_exclusions', 'assignment_strata', 'layer_allocations'):
        op.drop_table(name)
