"""Tables of storage: the object index and the backend records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import flag_modified

from shared.models.base import Base, utcnow
from shared.secretbox import EncryptedText, SecretsJSON


class StorageBackendRecord(Base):
    """Owned by storage: a place exports can go to (besides the configured default), managed by admins.

    ``token`` and the secret-looking keys of ``config`` are write-only: the API never returns them. Records are never
    deleted, only deactivated (``active``): objects stored in them stay readable and keep expiring.
    """

    __tablename__ = "storage_backends"

    id: Mapped[int] = mapped_column(primary_key=True)
    storage_backend: Mapped[str] = mapped_column(String(16))  # local | s3 | gcs | dropbox | seafile
    storage_backend_id: Mapped[str] = mapped_column(String(64), unique=True)  # the identifier clients name
    # Encrypted at rest (shared/secretbox.py): the token whole, the config's secret-named values one by one.
    token: Mapped[str | None] = mapped_column(EncryptedText)
    config: Mapped[dict[str, Any]] = mapped_column(SecretsJSON, default=dict)
    keep_days: Mapped[int] = mapped_column(Integer, default=0)  # 0: objects are kept
    description: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StorageObject(Base):
    """Owned by storage: which backend each object lives in, and when it expires (the retention sweeper's queue).

    ``backend`` is a ``storage_backend_id`` or ``default`` (the backend configured by environment). A deleted object
    keeps its row (``deleted_at``, ``deleted_reason``) so that links to it can say why it is gone. ``claim`` and
    ``claimed_until`` let several sweepers share the work; ``announce`` is the storage event still to be published
    for this row (an outbox of one).
    """

    __tablename__ = "storage_objects"
    __table_args__ = (Index("ix_storage_objects_due", "deleted_at", "expires_at"),
                      Index("ix_storage_objects_owner", "owner_id", "deleted_at"))

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    backend: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_reason: Mapped[str | None] = mapped_column(String(16))  # expired | deleted
    claim: Mapped[str | None] = mapped_column(String(36))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    announce: Mapped[str | None] = mapped_column(String(32), index=True)  # object_stored | object_expired
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The user whose quota the object counts against (uploads and import archives); None for everything else.
    owner_id: Mapped[int | None] = mapped_column(Integer)


def reseal_secrets(session: Session) -> int:
    """Re-encrypt every backend record's token and secret config values with the newest key: rows from before
    encryption existed and rows under a key being rotated out. ``SecretsKeyError`` if a row fits none of the keys.
    Storage runs it at start-up (every instance); ``tools/cli.py reseal-secrets`` on request. Returns the rows
    rewritten."""
    records = [(r.id, r.token, r.config, r.updated_at) for r in session.scalars(select(StorageBackendRecord))]
    session.rollback()  # nothing held while writing: each row is written on its own condition
    return sum(reseal_record(session, *record) for record in records)


def reseal_record(session: Session, record_id: int, token: str | None, config: dict[str, Any],
                  seen_updated_at: datetime) -> bool:
    """Write a record's decrypted ``token`` and ``config`` back, sealed with the newest key, unless the record
    changed since they were read: a storage instance starting while an admin edits the record through another
    instance must not put the old values back. The row is read again under ``FOR UPDATE`` (PostgreSQL holds an edit
    until the commit) and compared by value: a timestamp compared in SQL would miss rows whose stored text has no
    fraction of a second (SQLite). Commits; whether the row was rewritten."""
    record = session.scalars(select(StorageBackendRecord).where(StorageBackendRecord.id == record_id)
                             .with_for_update()).one_or_none()
    if record is None or (record.token, record.config, record.updated_at) != (token, config, seen_updated_at):
        session.rollback()
        return False
    flag_modified(record, "token")  # loading decrypted them; marked, they are written with the newest key
    flag_modified(record, "config")
    session.commit()
    return True
