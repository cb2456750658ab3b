"""The gateway's row reader (``services/api_gateway/dependencies.py``) against a real PostgreSQL: its pool neither
pings nor wraps reads in transactions, so a connection the server dropped must be noticed by the read itself and
the read tried once more on a fresh connection."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.api_gateway.dependencies import row_reader
from shared.db import make_engine


@pytest.fixture
def engine(postgres_url):
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0, pre_ping=False, autocommit=True)
    yield engine
    engine.dispose()


def _backend_pid(conn) -> int:
    return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_read_after_the_server_dropped_its_connection_is_answered_on_a_new_one(engine, postgres_url):
    read = row_reader(engine)
    first = read(_backend_pid)
    admin = sa.create_engine(postgres_url)
    with admin.connect() as conn:  # what a server restart or an idle-connection killer does
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    second = read(_backend_pid)
    assert second != first
    admin.dispose()


def test_reads_run_outside_any_transaction(engine):
    read = row_reader(engine)
    # In autocommit, each statement is its own transaction: two statements on one connection see two transaction
    # ids (inside a transaction they would see the same one).
    txids = read(lambda conn: [conn.execute(sa.text("SELECT txid_current()")).scalar_one() for _ in range(2)])
    assert txids[0] != txids[1]


def test_an_error_that_is_not_a_lost_connection_is_not_retried(engine):
    read = row_reader(engine)
    calls = []

    def failing(conn):
        calls.append(1)
        return conn.execute(sa.text("SELECT 1/0")).scalar_one()

    with pytest.raises(sa.exc.DBAPIError):
        read(failing)
    assert len(calls) == 1
