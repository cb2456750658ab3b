"""Fixtures shared by the whole suite: samples location, free ports, throwaway databases."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("SAMPLES_DIR", REPO.parent / "shared" / "samples")).resolve()
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"samples not found at {SAMPLES_DIR} (set SAMPLES_DIR to run these tests)")
    return SAMPLES_DIR


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'platform.db'}"


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped when the block ends (skips the test if none is reachable)."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Runs a test once on SQLite and once on PostgreSQL, migrated to head."""
    from shared.db import upgrade_to_head

    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    upgrade_to_head(url)
    return url


@pytest.fixture
def session_factory(database_url):
    """Sessions on ``database_url`` (SQLite and PostgreSQL, migrated to head)."""
    from shared.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _migrated_sqlite(url: str):
    from shared.db import make_engine, make_session_factory, upgrade_to_head

    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sqlite_factory(sqlite_url):
    """Sessions on a fresh SQLite database migrated to head."""
    yield from _migrated_sqlite(sqlite_url)


@pytest.fixture(scope="module")
def module_sqlite_factory(tmp_path_factory):
    """Sessions on a fresh SQLite database migrated to head, one for all the tests of a module."""
    yield from _migrated_sqlite(f"sqlite:///{tmp_path_factory.mktemp('module_db') / 'platform.db'}")


@pytest.fixture(scope="module")
def rabbit_vhost_uri():
    """``amqp://.../<vhost>`` of a fresh vhost, deleted (with its queues and exchanges) after the module."""
    from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost

    vhost = create_vhost()
    yield amqp_uri(vhost)
    delete_vhost(vhost)
