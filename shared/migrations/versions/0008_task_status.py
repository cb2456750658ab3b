"""task status: the HTTP state is WAITING | SUCCESS | FAILURE only, the finer phase moves to its own column

Revision ID: 0008
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = "0007"
branch_labels = None
depends_on = None

tasks = sa.table('tasks', sa.column('state', sa.String), sa.column('status', sa.String),
                 sa.column('progress', sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='queued'))
    # Tasks underway keep their phase in status; finished ones keep the last phase they are known to have reached.
    op.execute(tasks.update().where(tasks.c.state == 'STARTED').values(state='WAITING', status='started'))
    op.execute(tasks.update().where(tasks.c.state == 'PROGRESS').values(state='WAITING', status='progress'))
    op.execute(tasks.update().where(tasks.c.state.in_(('SUCCESS', 'FAILURE')), tasks.c.progress.is_not(None))
               .values(status='progress'))


def downgrade() -> None:
    op.execute(tasks.update().where(tasks.c.state == 'WAITING', tasks.c.status == 'started')
               .values(state='STARTED'))
    op.execute(tasks.update().where(tasks.c.state == 'WAITING', tasks.c.status == 'progress')
               .values(state='PROGRESS'))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('status')
