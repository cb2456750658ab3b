"""The retention sweeper on SQLite and PostgreSQL: several sweepers at once delete each expired object once and
announce it once; claims are leases; failures are retried; unpublished events are published later."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import eventlet
import pytest
from sqlalchemy import select, update

from services.storage import object_index, retention
from services.storage.records.registry import Registry
from services.storage.settings import load_storage_settings
from services.storage.types import BackendError
from shared import contracts
from shared.db import make_engine, make_session_factory
from shared.models.base import utcnow
from shared.models.storage import StorageBackendRecord, StorageObject


class Published:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[tuple[str, dict]] = []
        self.fail = fail

    def __call__(self, event_type: str, payload: dict) -> None:
        eventlet.sleep(0)  # let concurrent sweepers interleave here, as a broker round trip would
        if self.fail:
            raise ConnectionError("broker down")
        assert contracts.SCHEMAS[event_type]().validate(payload) == {}
        self.events.append((event_type, payload))


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url, pool_size=10)
    yield make_session_factory(engine)
    engine.dispose()


def make_registry(db, storage_dir: Path) -> Registry:
    return Registry(load_storage_settings({}), storage_dir, db)


def store_expired(db, registry: Registry, count: int, backend: str = "default") -> list[str]:
    """``count`` objects stored in ``backend`` with retention, already past their expiry."""
    spec = registry.writable(backend)
    target = registry.backend(spec)
    keys = []
    for i in range(count):
        key = f"exports/event1/{uuid.uuid4()}/event1.zip"
        info = target.put_stream(key, [b"x" * (i + 1)])
        with db() as session:
            row, _ = object_index.record_stored(session, key, spec, info, True, utcnow())
            row.announce = None
            row.expires_at = utcnow() - timedelta(minutes=1)
            session.commit()
        keys.append(key)
    return keys


def add_record(db, identifier: str, keep_days: int = 1) -> None:
    with db() as session:
        session.add(StorageBackendRecord(storage_backend="local", storage_backend_id=identifier, config={},
                                         keep_days=keep_days, active=True))
        session.commit()


def test_concurrent_sweepers_delete_and_announce_each_object_once(db, tmp_path):
    add_record(db, "team")
    registries = [make_registry(db, tmp_path) for _ in range(4)]  # four storage instances
    keys = store_expired(db, registries[0], 20) + store_expired(db, registries[0], 20, backend="team")
    published = Published()
    pool = eventlet.GreenPool()
    reports = [pool.spawn(retention.sweep, db, registry, published, batch=7, claim_seconds=60)
               for registry in registries for _ in range(3)]
    results = [r.wait() for r in reports]
    pool.waitall()
    while sum(r.deleted for r in results) < len(keys):  # a last pass picks up whatever the batches left
        results.append(retention.sweep(db, registries[0], published, batch=100, claim_seconds=60))
        assert results[-1].deleted, "no progress"
    assert sum(r.deleted for r in results) == len(keys)
    announced = [p["key"] for t, p in published.events if t == contracts.OBJECT_EXPIRED]
    assert sorted(announced) == sorted(keys)  # each exactly once
    with db() as session:
        rows = session.scalars(select(StorageObject)).all()
    assert all(r.deleted_at is not None and r.deleted_reason == "expired" and r.announce is None for r in rows)
    for key in keys:
        assert registries[0].default_backend.stat(key) is None
        assert registries[0].resolve("team")[1].stat(key) is None


def test_claims_are_leases(db, tmp_path):
    registry = make_registry(db, tmp_path)
    [key] = store_expired(db, registry, 1)
    with db() as session:  # a sweeper that claimed the row and died
        session.execute(update(StorageObject).values(claim="dead", claimed_until=utcnow() + timedelta(minutes=5)))
        session.commit()
    published = Published()
    assert retention.sweep(db, registry, published, batch=10, claim_seconds=60).deleted == 0
    assert retention.sweep(db, registry, published, batch=10, claim_seconds=60,
                           now=utcnow() + timedelta(minutes=6)).deleted == 1
    assert registry.default_backend.stat(key) is None


def test_objects_not_due_are_left_alone(db, tmp_path):
    registry = make_registry(db, tmp_path)
    [key] = store_expired(db, registry, 1)
    with db() as session:
        session.execute(update(StorageObject).values(expires_at=utcnow() + timedelta(days=1)))
        session.commit()
    assert retention.sweep(db, registry, Published(), batch=10, claim_seconds=60).claimed == 0
    with db() as session:
        session.execute(update(StorageObject).values(expires_at=None))
        session.commit()
    assert retention.sweep(db, registry, Published(), batch=10, claim_seconds=60,
                           now=utcnow() + timedelta(days=3650)).claimed == 0
    assert registry.default_backend.stat(key) is not None


def test_a_failing_backend_is_retried_later(db, tmp_path, monkeypatch):
    registry = make_registry(db, tmp_path)
    [key] = store_expired(db, registry, 1)

    def refuse(key: str) -> bool:
        raise BackendError(f"s3: delete of {key!r} failed: AccessDenied (HTTP 403)")

    monkeypatch.setattr(registry.default_backend, "delete", refuse)
    report = retention.sweep(db, registry, Published(), batch=10, claim_seconds=60)
    assert (report.claimed, report.deleted, report.failed) == (1, 0, 1)
    with db() as session:
        row = session.get(StorageObject, key)
        assert row.deleted_at is None and row.claimed_until > utcnow() + timedelta(minutes=4)
    monkeypatch.undo()
    later = utcnow() + retention.RETRY_AFTER + timedelta(seconds=1)
    assert retention.sweep(db, registry, Published(), batch=10, claim_seconds=60, now=later).deleted == 1


def test_unpublished_events_are_published_by_a_later_sweep(db, tmp_path, monkeypatch):
    registry = make_registry(db, tmp_path)
    [key] = store_expired(db, registry, 1)
    down = Published(fail=True)
    assert retention.sweep(db, registry, down, batch=10, claim_seconds=60).deleted == 1
    with db() as session:
        assert session.get(StorageObject, key).announce == contracts.OBJECT_EXPIRED
    monkeypatch.setattr(retention, "ANNOUNCE_GRACE", timedelta(0))
    up = Published()
    assert retention.sweep(db, registry, up, batch=10, claim_seconds=60).announced == 1
    [(event_type, payload)] = up.events
    assert (event_type, payload["key"], payload["reason"]) == (contracts.OBJECT_EXPIRED, key, "expired")
    with db() as session:
        assert session.get(StorageObject, key).announce is None


def test_several_sweepers_publish_each_late_event_once(db, tmp_path):
    # Every storage instance sweeps, so every one of them looks for events left unpublished: each goes out once.
    registry = make_registry(db, tmp_path)
    keys = store_expired(db, registry, 6)
    assert retention.sweep(db, registry, Published(fail=True), batch=10, claim_seconds=60).deleted == 6
    with db() as session:  # left unpublished for longer than the grace, as time would
        session.execute(update(StorageObject).values(updated_at=utcnow() - 2 * retention.ANNOUNCE_GRACE))
        session.commit()
    up = Published()
    pool = eventlet.GreenPool()
    runs = [pool.spawn(retention.publish_pending, db, make_registry(db, tmp_path), up, batch=10) for _ in range(4)]
    assert sum(run.wait() for run in runs) == 6
    assert sorted(payload["key"] for _, payload in up.events) == sorted(keys)
    with db() as session:
        assert all(session.get(StorageObject, key).announce is None for key in keys)
