"""check-backs for flows, and safety-check results

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scheduled_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('target', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('answers', sa.Text(), nullable=True))
        batch_op.create_foreign_key('fk_scheduled_jobs_run_id', 'flow_runs', ['run_id'], ['id'],
                                    ondelete='CASCADE')

    op.create_table('safety_checks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('relationship', sa.String(length=16), nullable=False),
    sa.Column('scores', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('safety_checks', schema=None) as batch_op:
        batch_op.create_index('ix_safety_checks_user_created', ['user_id', 'created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('safety_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_safety_checks_user_created')
    op.drop_table('safety_checks')
    with op.batch_alter_table('scheduled_jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_scheduled_jobs_run_id', type_='foreignkey')
        batch_op.drop_column('answers')
        batch_op.drop_column('target')
        batch_op.drop_column('run_id')
