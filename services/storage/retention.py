"""Retention: delete expired objects, and publish the storage events still due.

Safe with several storage instances sweeping at once: each sweep *claims* due rows before touching them, with a
conditional UPDATE (``... WHERE claimed_until IS NULL OR claimed_until < now``) that only one sweeper can win per
row; on PostgreSQL the candidates are read with ``SELECT ... FOR UPDATE SKIP LOCKED`` as well, so concurrent
sweepers pick different rows instead of waiting for each other. A claim is a lease (``claim_seconds``): rows of a
sweeper that died are taken over when it runs out. A row is marked deleted only if its sweeper's claim still holds.
Events left unpublished are claimed the same way (``object_index.claim_announcement``) before a sweeper
publishes them again, so two sweepers do not both send one.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import eventlet
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.storage import object_index
from services.storage.backends.local import TMP_PREFIX
from services.storage.records.registry import Registry
from services.storage.types import StorageError, UnknownBackend
from shared import contracts
from shared.jobs.lifecycle import ANNOUNCE_GRACE
from shared.models.base import utcnow
from shared.models.storage import StorageObject

log = logging.getLogger(__name__)

RETRY_AFTER = timedelta(minutes=5)  # a backend that failed to delete is asked again after this
PUBLISHES_AT_ONCE = 8  # announcements of one batch in flight together


@dataclass
class SweepReport:
    claimed: int = 0
    deleted: int = 0
    failed: int = 0
    announced: int = 0


def claim_due(session: Session, now: datetime, batch: int, lease: timedelta, claim: str) -> list[str]:
    """Claim up to ``batch`` expired, undeleted, unclaimed objects for ``claim``; commits; returns their keys."""
    free = or_(StorageObject.claimed_until.is_(None), StorageObject.claimed_until < now)
    due = (StorageObject.deleted_at.is_(None), StorageObject.expires_at.is_not(None),
           StorageObject.expires_at <= now, free)
    # FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite renders no locking clause (it has one writer at a time anyway).
    candidates = session.scalars(
        select(StorageObject.key).where(*due).order_by(StorageObject.expires_at).limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for key in candidates:
        won = session.execute(
            update(StorageObject).where(StorageObject.key == key, *due)
            .values(claim=claim, claimed_until=now + lease)
        ).rowcount
        if won:
            claimed.append(key)
    session.commit()
    return claimed


def _publish(session: Session, registry: Registry, publish: contracts.Publish, row: StorageObject) -> bool:
    spec = registry.spec(row.backend, session)
    event_type, payload = object_index.event_payload(row, spec.kind if spec else "unknown")
    try:
        publish(event_type, payload)
    except Exception:  # the broker is away: the row keeps its announcement for the next sweep
        log.warning("could not publish %s for %s; will retry", event_type, row.key, exc_info=True)
        return False
    object_index.clear_announce(session, row)
    session.commit()
    return True


def announce(db: sessionmaker[Session], registry: Registry, publish: contracts.Publish, key: str) -> None:
    """Publish the event due for ``key`` right after the change that made it due (committed already)."""
    announce_many(db, registry, publish, [key])


def announce_many(db: sessionmaker[Session], registry: Registry, publish: contracts.Publish, keys: list[str]) -> None:
    """Publish the events due for ``keys`` (a batch stored at once; several publishes in flight, each waiting for
    the broker's confirm), then clear them in one transaction; a row whose event could not be published keeps it
    for the sweeper."""
    if not keys:
        return
    with db() as session:
        rows = [row for row in session.scalars(select(StorageObject).where(StorageObject.key.in_(keys)))
                if row.announce is not None]
        kinds = {row.backend: _kind(registry, session, row.backend) for row in rows}

        def publish_one(row: StorageObject) -> bool:
            event_type, payload = object_index.event_payload(row, kinds[row.backend])
            try:
                publish(event_type, payload)
            except Exception:  # the broker is away: the row keeps its announcement for the next sweep
                log.warning("could not publish %s for %s; will retry", event_type, row.key, exc_info=True)
                return False
            return True

        published = list(eventlet.GreenPool(PUBLISHES_AT_ONCE).imap(publish_one, rows)) if len(rows) > 1 \
            else [publish_one(row) for row in rows]
        for row, ok in zip(rows, published, strict=True):
            if ok:
                object_index.clear_announce(session, row)
        session.commit()


def _kind(registry: Registry, session: Session, backend: str) -> str:
    spec = registry.spec(backend, session)
    return spec.kind if spec else "unknown"


def sweep(db: sessionmaker[Session], registry: Registry, publish: contracts.Publish, *, batch: int, claim_seconds: int,
          now: datetime | None = None) -> SweepReport:
    """One retention pass: delete what expired, then publish events left unpublished."""
    report = SweepReport()
    claim = str(uuid.uuid4())
    now = now or utcnow()
    with db() as session:
        keys = claim_due(session, now, batch, timedelta(seconds=claim_seconds), claim)
    report.claimed = len(keys)
    for key in keys:
        with db() as session:
            row = session.get(StorageObject, key)
            if row is None or row.claim != claim:
                continue  # stored again meanwhile: the new version has its own expiry
            try:
                _, backend = registry.resolve(row.backend, session)
                backend.delete(key)
            except (StorageError, UnknownBackend) as exc:
                # BackendError messages carry no secrets (backends/README.md).
                log.warning("retention: could not delete %s from %s: %s", key, row.backend, exc)
                session.execute(update(StorageObject).where(StorageObject.key == key, StorageObject.claim == claim)
                                .values(claimed_until=utcnow() + RETRY_AFTER))
                session.commit()
                report.failed += 1
                continue
            if not object_index.mark_deleted(session, key, object_index.EXPIRED, utcnow(), claim=claim):
                session.rollback()
                continue
            session.commit()
            report.deleted += 1
            row = session.get(StorageObject, key, populate_existing=True)
            if row is not None and _publish(session, registry, publish, row):
                report.announced += 1
    report.announced += publish_pending(db, registry, publish, batch=batch)
    if report.claimed or report.announced:
        log.info("retention: %s", report)
    return report


def publish_pending(db: sessionmaker[Session], registry: Registry, publish: contracts.Publish, *, batch: int) -> int:
    """Publish events whose inline publication did not happen (process died, broker down); at least once, and once
    per grace period however many storage instances sweep (each row is claimed first)."""
    published = 0
    with db() as session:
        for row in object_index.pending_announcements(session, utcnow() - ANNOUNCE_GRACE, batch):
            if not object_index.claim_announcement(session, row, utcnow()):
                continue  # another sweeper publishes this one
            session.refresh(row)
            if row.announce is not None and _publish(session, registry, publish, row):
                published += 1
    return published


def purge_partial_uploads(storage_dir: Path, older_than: float) -> int:
    """Remove the ``.tmp-*`` parts of uploads a crashed process left anywhere under ``storage_dir`` (every local
    backend lives there), once untouched for ``older_than`` seconds: a live upload keeps writing to its part."""
    cutoff = time.time() - older_than
    removed = 0
    for root, _dirs, files in os.walk(storage_dir):
        for name in files:
            if not name.startswith(TMP_PREFIX):
                continue
            path = os.path.join(root, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass  # finished or removed by another instance meanwhile
    if removed:
        log.info("removed %d partial upload(s) left by a crash under %s", removed, storage_dir)
    return removed
