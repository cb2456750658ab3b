"""Backend records (``storage_backends``): create, change, deactivate, list; the admin API reaches these over RPC.

Tokens and secret config values are write-only: ``public_view`` is the only shape a record leaves the service in,
with ``token_set`` and ``secrets_set`` instead of the values. Records are never deleted (objects may live in them).
In the database they are encrypted (the model's column types, ``shared/secretbox.py``);
``shared.models.storage.reseal_secrets`` re-encrypts rows written before that or under an older key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.storage.records.config import (
    DEFAULT_ID,
    TOKEN_FIELD,
    InvalidBackendConfig,
    check_identifier,
    check_kind,
    normalize,
    public_config,
)
from services.storage.records.registry import BackendSpec
from services.storage.types import UnknownBackend
from shared.contracts import UTC_FORMAT
from shared.models.base import utcnow
from shared.models.storage import StorageBackendRecord, StorageObject

CREATE_FIELDS = ("storage_backend", "storage_backend_id", "token", "config", "keep_days", "description", "active")
UPDATE_FIELDS = ("token", "config", "keep_days", "description", "active")
MAX_KEEP_DAYS = 36500
MAX_DESCRIPTION = 2000

# check(spec, probe): raises InvalidBackendConfig if the client library refuses the spec and, with ``probe``, if the
# backend does not work (a real put, stat and delete: services/storage/records/probe.py).
CheckSpec = Callable[[BackendSpec, bool], None]


class BackendExists(Exception):
    """A record with this identifier exists already."""


def _check_fields(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidBackendConfig("The request body must be a JSON object.")
    unknown = sorted(map(str, set(body) - set(allowed)))
    if unknown:
        fixed = [k for k in unknown if k in ("storage_backend", "storage_backend_id")]
        if fixed:
            raise InvalidBackendConfig(f"{', '.join(fixed)} cannot be changed; create another backend instead.")
        raise InvalidBackendConfig(f"Unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}.")
    if "keep_days" in body:
        days = body["keep_days"]
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= MAX_KEEP_DAYS:
            raise InvalidBackendConfig(f"keep_days must be a whole number from 0 (keep) to {MAX_KEEP_DAYS}.")
    if body.get("description") is not None:
        if not isinstance(body["description"], str) or len(body["description"]) > MAX_DESCRIPTION:
            raise InvalidBackendConfig(f"description must be a string of at most {MAX_DESCRIPTION} characters.")
    if "active" in body and not isinstance(body["active"], bool):
        raise InvalidBackendConfig("active must be true or false.")
    if body.get("token") is not None and not isinstance(body["token"], str | dict):
        raise InvalidBackendConfig("token must be a string.")
    return body


def _find(session: Session, identifier: str, lock: bool = False) -> StorageBackendRecord:
    query = select(StorageBackendRecord).where(StorageBackendRecord.storage_backend_id == identifier)
    record = session.scalar(query.with_for_update() if lock else query)
    if record is None:
        raise UnknownBackend(f"There is no storage backend {identifier!r}.")
    return record


def public_view(record: StorageBackendRecord, objects: int | None = None) -> dict[str, Any]:
    config, secrets = public_config(record.storage_backend, dict(record.config or {}))
    view = {
        "storage_backend": record.storage_backend,
        "storage_backend_id": record.storage_backend_id,
        "config": config,
        "token_set": bool(record.token),
        "secrets_set": secrets,
        "keep_days": record.keep_days,
        "description": record.description,
        "active": record.active,
        "created_at": record.created_at.strftime(UTC_FORMAT),
        "updated_at": record.updated_at.strftime(UTC_FORMAT),
    }
    if objects is not None:
        view["objects"] = objects
    return view


def _object_counts(session: Session, identifiers: list[str] | None = None) -> dict[str, int]:
    query = select(StorageObject.backend, func.count()).where(StorageObject.deleted_at.is_(None))
    if identifiers is not None:
        query = query.where(StorageObject.backend.in_(identifiers))
    return {backend: count for backend, count in session.execute(query.group_by(StorageObject.backend))}


def list_records(session: Session, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
    """Every record in the order they were created, or (keyset) ``limit`` of them after the record ``after`` (an
    identifier: records are never deleted, so it always names one)."""
    query = select(StorageBackendRecord).order_by(StorageBackendRecord.id)
    if after is not None:
        query = query.where(StorageBackendRecord.id > select(StorageBackendRecord.id).where(
            StorageBackendRecord.storage_backend_id == after).scalar_subquery())
    records = list(session.scalars(query if limit is None else query.limit(limit)))
    counts = _object_counts(session, [r.storage_backend_id for r in records])
    return [public_view(r, counts.get(r.storage_backend_id, 0)) for r in records]


DEFAULT_DESCRIPTION = "The platform's default storage."


def choices(session: Session, default: BackendSpec, limit: int | None = None,
            after: str | None = None) -> list[dict[str, Any]]:
    """What an organizer may name in an export's ``storage`` option: the default backend, then the active records
    by identifier. Keyset: ``limit`` of them after the identifier ``after``, where the default entry sorts as ``""``
    (before every identifier).

    Identifiers, kinds, descriptions and keep days only: never a token, a config value or an object count.
    """
    first = [] if after is not None else [
        {"storage_backend_id": DEFAULT_ID, "storage_backend": default.kind, "description": DEFAULT_DESCRIPTION,
         "keep_days": default.keep_days, "default": True}]
    query = (select(StorageBackendRecord).where(StorageBackendRecord.active.is_(True))
             .order_by(StorageBackendRecord.storage_backend_id))
    if after:
        query = query.where(StorageBackendRecord.storage_backend_id > after)
    if limit is not None:
        query = query.limit(max(0, limit - len(first)))
    return (first + [
        {"storage_backend_id": r.storage_backend_id, "storage_backend": r.storage_backend,
         "description": r.description, "keep_days": r.keep_days, "default": False} for r in session.scalars(query)]
    )[:limit]


def describe(session: Session, identifier: str) -> dict[str, Any] | None:
    try:
        record = _find(session, identifier)
    except UnknownBackend:
        return None
    return public_view(record, _object_counts(session).get(identifier, 0))


def create(session: Session, body: Any, check: CheckSpec) -> dict[str, Any]:
    body = _check_fields(body, CREATE_FIELDS)
    kind = check_kind(body.get("storage_backend"))
    identifier = check_identifier(body.get("storage_backend_id"))
    config, token = normalize(kind, body.get("config"), body.get("token"))
    record = StorageBackendRecord(
        storage_backend=kind, storage_backend_id=identifier, token=token, config=config,
        keep_days=body.get("keep_days", 0), description=body.get("description"), active=body.get("active", True),
        created_at=utcnow(), updated_at=utcnow(),
    )
    if session.scalar(select(StorageBackendRecord.id).where(StorageBackendRecord.storage_backend_id == identifier)):
        raise BackendExists(f"A storage backend {identifier!r} exists already.")
    check(BackendSpec.from_record(record), record.active)  # an inactive record is checked when activated
    session.add(record)
    try:
        session.commit()
    except IntegrityError:  # created concurrently
        session.rollback()
        raise BackendExists(f"A storage backend {identifier!r} exists already.") from None
    return public_view(record, 0)


def update(session: Session, identifier: str, body: Any, check: CheckSpec) -> dict[str, Any]:
    """Change a record. ``config`` is merged into the stored one (``null`` removes a key), so secrets that are not
    sent again are kept; ``token: null`` clears the token."""
    body = _check_fields(body, UPDATE_FIELDS)
    record = _find(session, identifier, lock=True)
    before = BackendSpec.from_record(record)
    kind = record.storage_backend
    changes = body.get("config", {})
    if changes is None:
        changes = {}
    if not isinstance(changes, dict):
        raise InvalidBackendConfig("config must be a JSON object (keys to change; null removes a key).")
    merged = {**(record.config or {}), **changes}
    merged = {k: v for k, v in merged.items() if v is not None}
    token_field = TOKEN_FIELD.get(kind)
    if "token" in body:
        token = body["token"]
    elif token_field is not None and token_field in merged:
        token = merged.pop(token_field)
    else:
        token = record.token
    config, token = normalize(kind, merged, token)
    record.config = config
    record.token = token
    for name in ("keep_days", "description", "active"):
        if name in body:
            setattr(record, name, body[name])
    record.updated_at = utcnow()
    after = BackendSpec.from_record(record)
    # Probe when what the backend is built from changed or it is (re)activated; keep days, a description or a
    # deactivation need no working backend.
    check(after, after.active and (after.fingerprint != before.fingerprint or not before.active))
    session.commit()
    return public_view(record, _object_counts(session).get(identifier, 0))


def deactivate(session: Session, identifier: str) -> dict[str, Any]:
    record = _find(session, identifier, lock=True)
    if record.active:
        record.active = False
        record.updated_at = utcnow()
        session.commit()
    return public_view(record, _object_counts(session).get(identifier, 0))
