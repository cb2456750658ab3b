"""storage object owners (per-user byte quotas)

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 23:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The user whose quota an object counts against (uploads and import archives); NULL for everything else.
    with op.batch_alter_table('storage_objects') as batch:
        batch.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch.create_index('ix_storage_objects_owner', ['owner_id', 'deleted_at'])


def downgrade() -> None:
    with op.batch_alter_table('storage_objects') as batch:
        batch.drop_index('ix_storage_objects_owner')
        batch.drop_column('owner_id')
