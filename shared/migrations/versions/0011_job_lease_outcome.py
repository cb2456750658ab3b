"""job leases: the outcome a run reached, kept until its event is out

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_leases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_leases', schema=None) as batch_op:
        batch_op.drop_column('outcome')
