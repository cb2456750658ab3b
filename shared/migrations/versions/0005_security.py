"""user ids never reused (SQLite AUTOINCREMENT); login throttle

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite only promises never to reuse a rowid with AUTOINCREMENT, which needs the table rebuilt. Alembic runs
        # without PRAGMA foreign_keys (shared/migrations/env.py), so dropping the old table cascades nothing.
        with op.batch_alter_table('users', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass
    # PostgreSQL: SERIAL ids come from a sequence, which never hands out a value twice.
    op.create_table('login_throttle',
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('login_throttle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_throttle_window_start'), ['window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('login_throttle', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_throttle_window_start'))
    op.drop_table('login_throttle')
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table('users', recreate='always', table_kwargs={'sqlite_autoincrement': False}):
            pass
