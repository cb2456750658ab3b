"""The object index (``storage_objects``): which backend each object lives in, its size and sha256, when it expires.

Written when an object is stored, read to find an object's backend, marked (not removed) when an object is deleted so
that a link to it can say why it is gone. Plain functions over a SQLAlchemy session; times are naive UTC as in the
rest of the data model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.storage.records.registry import BackendSpec
from services.storage.types import DEFAULT_CONTENT_TYPE, ObjectInfo
from shared import contracts, object_keys
from shared.contracts import UTC_FORMAT
from shared.models.storage import StorageObject

EXPIRED, DELETED = "expired", "deleted"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime(UTC_FORMAT)


def expiry(created_at: datetime, keep_days: int, retention: bool) -> datetime | None:
    """When an object stored at ``created_at`` expires: its backend's keep days, if the writer asked for retention."""
    if not retention or keep_days <= 0:
        return None
    return created_at + timedelta(days=keep_days)


def lookup(session: Session, key: str) -> StorageObject | None:
    return session.get(StorageObject, key)


def record_stored(session: Session, key: str, spec: BackendSpec, info: ObjectInfo, retention: bool,
                  now: datetime, owner: int | None = None,
                  keep_seconds: int | None = None,
                  rows: dict[str, StorageObject] | None = None) -> tuple[StorageObject, str | None]:
    """Insert or replace the row of ``key`` (flushed, not committed).

    ``owner``: the user whose byte quota the object counts against. ``keep_seconds``: an expiry of the writer's
    own (an uploaded import archive), instead of the backend's keep days. ``rows``: the existing rows of a batch,
    locked already (``lock_rows``); the row is then not flushed (the caller's commit writes the batch at once).

    Returns the row and, when the previous version of the key still lives in *another* backend, that backend's
    identifier (its bytes are now orphaned: the caller deletes them).
    """
    row = session.get(StorageObject, key, with_for_update=True) if rows is None else rows.get(key)
    previous = None
    if row is None:
        row = StorageObject(key=key)
        session.add(row)
    elif row.deleted_at is None and row.backend != spec.identifier:
        previous = row.backend
    row.backend = spec.identifier
    row.size = info.size
    row.sha256 = info.sha256
    row.content_type = info.content_type or DEFAULT_CONTENT_TYPE
    row.created_at = now
    row.expires_at = expiry(now, spec.keep_days, retention) if keep_seconds is None \
        else now + timedelta(seconds=keep_seconds)
    row.owner_id = owner
    row.deleted_at = row.deleted_reason = None
    row.claim = row.claimed_until = None
    row.announce = contracts.OBJECT_STORED
    row.updated_at = now
    if rows is None:
        session.flush()
    else:
        rows[key] = row  # the same key twice in one batch: the second replaces the first's row
    return row, previous


def lock_rows(session: Session, keys: list[str]) -> dict[str, StorageObject]:
    """The existing rows of ``keys`` by key, loaded (and locked, where the database can) in few queries, for
    ``record_stored`` with ``rows``."""
    found: dict[str, StorageObject] = {}
    for start in range(0, len(keys), 500):
        for row in session.scalars(select(StorageObject).where(StorageObject.key.in_(keys[start:start + 500]))
                                   .with_for_update()):
            found[row.key] = row
    return found


def mark_deleted(session: Session, key: str, reason: str, now: datetime, claim: str | None = None) -> bool:
    """Mark the object deleted (and its ``object_expired`` event due); ``False`` if it already was.

    With ``claim``, only if that sweeper's claim still holds (a new version stored meanwhile clears it).
    """
    conditions = [StorageObject.key == key, StorageObject.deleted_at.is_(None)]
    if claim is not None:
        conditions.append(StorageObject.claim == claim)
    changed = session.execute(
        update(StorageObject).where(*conditions).values(
            deleted_at=now, deleted_reason=reason, announce=contracts.OBJECT_EXPIRED, claim=None, claimed_until=None,
            updated_at=now,
        )
    ).rowcount
    return bool(changed)


def gone_reason(row: StorageObject) -> str:
    """Why a deleted object is gone, as a clause: ``it expired on ... and was deleted on ...``."""
    when = iso(row.deleted_at)
    if row.deleted_reason == EXPIRED:
        return f"it expired on {iso(row.expires_at) or when} and was deleted on {when}"
    return f"it was deleted on request on {when}"


def event_payload(row: StorageObject, kind: str) -> tuple[str, dict[str, Any]]:
    """The storage event ``row.announce`` names, built from the row (so a re-publication says the same)."""
    common = {
        **object_keys.key_context(row.key),
        "key": row.key,
        "backend": row.backend,
        "backend_kind": kind,
        "size": row.size,
        "sha256": row.sha256,
        "expires_at": iso(row.expires_at),
    }
    if row.announce == contracts.OBJECT_STORED:
        payload = contracts.make_storage_payload(contracts.OBJECT_STORED, **common, content_type=row.content_type
                                                 or DEFAULT_CONTENT_TYPE, created_at=iso(row.created_at))
        return contracts.OBJECT_STORED, payload
    payload = contracts.make_storage_payload(contracts.OBJECT_EXPIRED, **common, reason=row.deleted_reason or DELETED,
                                             deleted_at=iso(row.deleted_at))
    return contracts.OBJECT_EXPIRED, payload


def clear_announce(session: Session, row: StorageObject) -> None:
    """The event was published: clear it, unless the row changed meanwhile (then that change's event is due)."""
    session.execute(
        update(StorageObject)
        .where(StorageObject.key == row.key, StorageObject.announce == row.announce,
               StorageObject.updated_at == row.updated_at)
        .values(announce=None)
    )


def claim_announcement(session: Session, row: StorageObject, now: datetime) -> bool:
    """Take a row's late event for publishing (several storage instances look for them at once): moving
    ``updated_at`` to ``now`` keeps the others off it for the grace period, after which it is due again if this
    publisher died first. Commits; ``False`` if another publisher (or a change of the row) came first."""
    changed = session.execute(
        update(StorageObject)
        .where(StorageObject.key == row.key, StorageObject.announce == row.announce,
               StorageObject.updated_at == row.updated_at)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(changed)


def pending_announcements(session: Session, older_than: datetime, limit: int) -> list[StorageObject]:
    """Rows whose event was not published (the publisher died or the broker was down) for a while."""
    return list(session.scalars(
        select(StorageObject)
        .where(StorageObject.announce.is_not(None), StorageObject.updated_at < older_than)
        .order_by(StorageObject.updated_at)
        .limit(limit)
    ))


def stored_bytes(session: Session, owner: int) -> int:
    """Bytes of the objects ``owner`` holds now (deleted and expired-and-swept ones no longer count)."""
    total = session.scalar(select(func.coalesce(func.sum(StorageObject.size), 0))
                           .where(StorageObject.owner_id == owner, StorageObject.deleted_at.is_(None)))
    return int(total or 0)


def expire_after(session: Session, key: str, seconds: int, now: datetime) -> bool:
    """Set ``key`` to expire ``seconds`` from ``now`` (the sweeper deletes it then); ``False`` if there is no live
    object at ``key``."""
    changed = session.execute(
        update(StorageObject).where(StorageObject.key == key, StorageObject.deleted_at.is_(None))
        .values(expires_at=now + timedelta(seconds=seconds), claim=None, claimed_until=None)
    ).rowcount
    return bool(changed)
