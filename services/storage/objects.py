"""What the storage entrypoints do with objects, over every backend: sign links, store, serve, stat, delete.

Plain functions over the registry, a session factory and a publish callable; ``service.py`` wires them to RPC and
HTTP entrypoints.

- Uploads always go through the data plane (``PUT /objects/<key>``): the signed link names the backend
  (``backend=<storage_backend_id>``, absent for the default) and whether the object follows its backend's keep days
  (``retention=1``); both are covered by the signature.
- Downloads: a backend that can sign (S3, GCS with a signing key) gets a presigned URL of its own; the others (local,
  Dropbox, Seafile) are served by the data plane, which proxies ``open_range``. Either way Range works and the file
  is named as asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Request, Response

from services.storage import data_plane, object_index
from services.storage.backends.base import ObjectBackend
from services.storage.records.registry import MAX_PRESIGN_SECONDS, BackendSpec, Registry
from services.storage.retention import announce, announce_many
from services.storage.types import (
    InactiveBackend,
    ObjectGone,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    UnknownBackend,
    validate_key,
)
from shared import contracts
from shared.config import Settings
from shared.http import ApiError, json_response
from shared.models.base import utcnow
from shared.models.storage import StorageObject

log = logging.getLogger(__name__)

Later = Callable[[Callable[[], None]], Any]  # runs a step now or in the background
BACKEND_PARAM, RETENTION_PARAM = "backend", "retention"
OWNER_PARAM, KEEP_PARAM = "owner", "keep"  # signed like the others: a client can neither drop nor change them


def _locate(registry: Registry, session: Session, key: str) -> tuple[StorageObject | None, ObjectBackend]:
    """The index row of ``key`` (``None`` for objects stored before the index) and the backend it lives in.

    Raises ``ObjectGone`` for a deleted object.
    """
    row = object_index.lookup(session, validate_key(key))
    if row is None:
        return None, registry.default_backend
    if row.deleted_at is not None:
        raise ObjectGone(object_index.gone_reason(row))
    return row, registry.resolve(row.backend, session)[1]


def signed_url(registry: Registry, db: sessionmaker[Session], settings: Settings, key: str, *, method: str = "GET",
               ttl: int | None = None, filename: str | None = None, backend: str | None = None,
               retention: bool = False, must_exist: bool = False, data_plane_only: bool = False,
               owner: int | None = None, keep_seconds: int | None = None) -> str:
    """A link for ``key`` (see ``StorageService.signed_url``).

    GET with ``must_exist``: ``ObjectNotFound`` unless the object is there (in the index, or, for objects stored
    before the index, in the default backend), so a public address of a missing object is a 404, not a redirect.
    ``data_plane_only``: always the data plane's link, never a backend's presigned URL (services read platform
    objects through the data plane, which every service can reach).
    """
    ttl = settings.signed_url_ttl if ttl is None else ttl
    method = method.upper()
    extra: dict[str, str] = {}
    if method in ("PUT", data_plane.BATCH_METHOD):
        with db() as session:
            spec = registry.writable(backend, session)
        if spec.identifier != registry.default_spec.identifier:
            extra[BACKEND_PARAM] = spec.identifier
        if retention:
            extra[RETENTION_PARAM] = "1"
        if owner is not None:
            extra[OWNER_PARAM] = str(int(owner))
        if keep_seconds is not None:
            if isinstance(keep_seconds, bool) or int(keep_seconds) <= 0:
                raise ValueError("keep_seconds must be a positive number of seconds")
            extra[KEEP_PARAM] = str(int(keep_seconds))
    elif method in ("GET", "HEAD"):
        with db() as session:
            row, holder = _locate(registry, session, key)
        if must_exist and row is None and holder.stat(key) is None:
            raise ObjectNotFound(f"no object is stored at {key}")
        presignable = row is not None and not isinstance(ttl, bool) and 0 < int(ttl) <= MAX_PRESIGN_SECONDS
        if presignable and not data_plane_only:
            presigned = holder.presigned_get(key, int(ttl), filename)
            if presigned is not None:
                return presigned
    if method == data_plane.BATCH_METHOD:  # ``key`` is a prefix: a link to upload many objects under it at once
        return data_plane.batch_url(settings.storage_url, settings.link_key, key, ttl=ttl, extra=extra)
    return data_plane.signed_url(settings.storage_url, settings.link_key, key, method=method, ttl=ttl,
                                 filename=filename, extra=extra)


def store(registry: Registry, db: sessionmaker[Session], publish: contracts.Publish, key: str, request: Request,
          max_size: int | None = None) -> Response:
    """``PUT``: stream the body into the backend the (verified) link names, index it, announce ``object_stored``."""
    spec, backend = _writable(registry, db, request)
    info = data_plane.store_object(backend, key, request, max_size=max_size)
    [expires_at] = _index(registry, db, publish, spec, [info], request)
    # The writer learns the object's own retention: which backend keeps it and until when (null: until deleted).
    return data_plane.stored_response(info, backend=spec.identifier, expires_at=expires_at)


def store_batch(registry: Registry, db: sessionmaker[Session], publish: contracts.Publish, prefix: str,
                request: Request, max_size: int | None = None, later: Later = lambda step: step()) -> Response:
    """``POST /batches/<prefix>``: every object of the body stored in turn, then all indexed in one transaction
    and announced together. 201 ``{"objects": [{"key", "size", "sha256", "backend", "expires_at"}, ...]}``.

    The announcements are handed to ``later`` (the service runs them in a green thread of their own): the writer
    waits for the index, not for a broker confirm per object. They are committed as due with the rows, so one that
    never goes out (the process stopped) is published by the sweeper.

    Objects stored before a failure half-way (a broken body, a backend error) are whole: they are indexed too, so
    the index never describes bytes that were replaced, and the error is raised.
    """
    spec, backend = _writable(registry, db, request)
    stored: list[ObjectInfo] = []
    try:
        data_plane.store_batch(backend, prefix, request, max_size=max_size, stored=stored)
    finally:
        expires = _index(registry, db, publish, spec, stored, request, later) if stored else []
    return json_response({"objects": [
        {"key": info.key, "size": info.size, "sha256": info.sha256, "backend": spec.identifier, "expires_at": at}
        for info, at in zip(stored, expires, strict=True)]}, status=201)


def _writable(registry: Registry, db: sessionmaker[Session], request: Request) -> tuple[BackendSpec, ObjectBackend]:
    """The backend the (verified) link names, if it takes new objects (409 otherwise)."""
    try:
        with db() as session:
            spec = registry.writable(request.args.get(BACKEND_PARAM), session)
    except (UnknownBackend, InactiveBackend) as exc:
        raise ApiError(409, "storage_unavailable", str(exc)) from None
    return spec, registry.backend(spec)


def _index(registry: Registry, db: sessionmaker[Session], publish: contracts.Publish, spec: BackendSpec,
           stored: list[ObjectInfo], request: Request, later: Later = lambda step: step()) -> list[str | None]:
    """Index rows of ``stored`` in one transaction, then their announcements; returns each one's expiry."""
    retention = request.args.get(RETENTION_PARAM) == "1"
    owner, keep = _int_param(request, OWNER_PARAM), _int_param(request, KEEP_PARAM)
    orphans: list[tuple[str, str]] = []
    expires: list[str | None] = []
    for attempt in range(2):
        with db() as session:
            try:
                now = utcnow()
                orphans, expires = [], []
                rows = object_index.lock_rows(session, [info.key for info in stored])
                for info in stored:
                    row, previous = object_index.record_stored(session, info.key, spec, info, retention, now,
                                                               owner=owner, keep_seconds=keep, rows=rows)
                    expires.append(object_index.iso(row.expires_at))
                    if previous is not None:
                        orphans.append((previous, info.key))
                session.commit()
                break
            except IntegrityError:  # the same key stored concurrently for the first time: the row exists now
                session.rollback()
                if attempt:
                    raise
    for previous, key in orphans:
        _delete_orphan(registry, previous, key)
    keys = [info.key for info in stored]
    later(lambda: announce_many(db, registry, publish, keys))
    return expires


def _int_param(request: Request, name: str) -> int | None:
    value = request.args.get(name)  # covered by the link's signature: we wrote it
    return int(value) if value is not None and value.isdigit() else None


def _delete_orphan(registry: Registry, identifier: str, key: str) -> None:
    """The key moved to another backend: its previous bytes must not linger where nothing points at them."""
    try:
        registry.resolve(identifier)[1].delete(key)
    except (StorageError, UnknownBackend) as exc:
        log.warning("could not delete the previous version of %s from %s: %s", key, identifier, exc)


def serve(registry: Registry, db: sessionmaker[Session], key: str, request: Request) -> Response:
    """``GET``/``HEAD`` through the data plane, from whichever backend holds the object; 410 once it is gone."""
    try:
        with db() as session:
            _, backend = _locate(registry, session, key)
    except ObjectGone as exc:
        raise ApiError(410, "gone", f"This file is no longer available: {exc}.") from None
    except UnknownBackend as exc:
        raise ApiError(502, "backend_error", str(exc)) from None
    return data_plane.serve_object(backend, key, request)


def stat(registry: Registry, db: sessionmaker[Session], key: str) -> dict[str, Any] | None:
    try:
        with db() as session:
            row, backend = _locate(registry, session, key)
    except ObjectGone:
        return None
    info = backend.stat(key)
    if info is None:
        return None
    result = info.to_dict()
    if row is not None:
        result.update(backend=row.backend, expires_at=object_index.iso(row.expires_at))
    return result


def delete(registry: Registry, db: sessionmaker[Session], publish: contracts.Publish, key: str) -> bool:
    """Delete on request: the bytes go, the index row stays (marked) so links can answer 410; ``True`` if there
    was an object."""
    with db() as session:
        row = object_index.lookup(session, validate_key(key))
        if row is None:
            return registry.default_backend.delete(key)
        if row.deleted_at is not None:
            return False
        existed = registry.resolve(row.backend, session)[1].delete(key)
        marked = object_index.mark_deleted(session, key, object_index.DELETED, utcnow())
        session.commit()
    if marked:
        announce(db, registry, publish, key)
    return existed or marked
