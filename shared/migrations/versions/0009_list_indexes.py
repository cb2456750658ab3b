"""list indexes: keyset pagination reads each list in its sort order, (created_at, id) newest first

GET /v1/tasks and /v1/import-jobs filter tasks by requester, /v1/events/{id}/exports by event, and admins list
every event: with the sort key in the index a page costs the same however deep it is (no sort of every row).

Revision ID: 0009
Revises: 0008
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_requester_created', 'tasks', ['requested_by', 'created_at', 'id'])
    op.create_index('ix_tasks_event_created', 'tasks', ['event_id', 'created_at', 'id'])
    op.create_index('ix_events_created', 'events', ['created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_events_created', table_name='events')
    op.drop_index('ix_tasks_event_created', table_name='tasks')
    op.drop_index('ix_tasks_requester_created', table_name='tasks')
