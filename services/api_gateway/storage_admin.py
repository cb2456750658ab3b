"""The gateway's side of storage backends and stored exports: the admin API over storage's RPC, the export
request's ``storage`` option, deleting an export, and answers for archives that are gone.

Plain functions; ``service.py`` wires them to entrypoints. Storage owns the backend records and validates them; here
only the HTTP shape is checked and storage's refusals become HTTP errors. Tokens and secrets pass through (to
storage) but are never logged here and never come back: storage returns ``token_set``/``secrets_set`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.http import ApiError
from shared.models import ROLE_ORGANIZER, EventRole, User
from shared.rpc import RpcTimeout
from shared.storage_client import (
    BackendCheckFailed,
    BackendError,
    BackendExists,
    InvalidBackendConfig,
    ObjectGone,
    StorageClient,
    StorageFault,
    UnknownBackend,
)

T = TypeVar("T")

# storage's refusals of the admin API -> (HTTP status, error code)
_REFUSALS: dict[type[StorageFault], tuple[int, str]] = {
    InvalidBackendConfig: (400, "invalid_storage_backend"),
    BackendCheckFailed: (400, "storage_backend_check_failed"),
    UnknownBackend: (404, "storage_backend_not_found"),
    BackendExists: (409, "storage_backend_exists"),
}


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "Only admins may manage storage backends.")


def call_storage(step: Callable[[], T]) -> T:
    """One call of the storage client (``lambda: storage.list_backends()``); its refusals become 400/404/409, its
    silence 503."""
    try:
        return step()
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from exc
    except tuple(_REFUSALS) as exc:
        status, code = _REFUSALS[type(exc)]
        raise ApiError(status, code, str(exc)) from None


def describe(storage: StorageClient, identifier: str) -> dict[str, Any]:
    record = call_storage(lambda: storage.describe_backend(identifier))
    if record is None:
        raise ApiError(404, "storage_backend_not_found", f"There is no storage backend {identifier!r}.")
    return record
def export_storage(body: Any) -> tuple[Any, str | None]:
    """Take the ``storage`` option out of an export request body: ``(the other options, identifier or None)``."""
    if not isinstance(body, dict) or "storage" not in body:
        return body, None
    rest = {k: v for k, v in body.items() if k != "storage"}
    storage = body["storage"]
    if storage is None:
        return rest, None
    if not isinstance(storage, str) or not storage:
        raise ApiError(400, "invalid_request", "Option 'storage' must be the storage_backend_id of a backend.")
    return rest, storage


def check_export_storage(storage: StorageClient, identifier: str) -> None:
    """An export may only name a backend that exists and is active (400 otherwise)."""
    record = call_storage(lambda: storage.describe_backend(identifier))
    if record is None:
        raise ApiError(400, "unknown_storage", f"There is no storage backend {identifier!r}.")
    if not record.get("active"):
        raise ApiError(400, "storage_inactive",
                       f"Storage backend {identifier!r} is inactive; choose another one or leave 'storage' out.")


def require_export_deleter(session: Session, user: User, event_id: int) -> None:
    """Deleting an export: the event's organizers and admins (co-organizers may export, not delete)."""
    if user.is_admin:
        return
    role = session.scalar(select(EventRole.id).where(EventRole.user_id == user.id, EventRole.event_id == event_id,
                                                     EventRole.role == ROLE_ORGANIZER))
    if role is None:
        raise ApiError(403, "forbidden", f"Only organizers and admins may delete exports of event {event_id}.")


def gone(task_id: str, why: str | None = None) -> ApiError:
    """410 for an export whose archive is gone, saying why (expired or deleted) when storage knows."""
    message = f"The archive of export {task_id} is no longer available"
    message += f": {why}." if why else "."
    return ApiError(410, "export_gone", message + " Request a new export.")


def signed_download(storage: StorageClient, task_id: str, key: str, ttl: int, filename: str) -> str:
    """A fresh download link for an export's archive (the backend's own presigned URL where it can sign), or 410."""
    try:
        url = storage.signed_url(key, method="GET", ttl=ttl, filename=filename)
        if storage.stat(key) is None:  # an object that vanished without storage deleting it
            raise gone(task_id)
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from exc
    except ObjectGone as exc:
        raise gone(task_id, str(exc)) from None
    except BackendError as exc:
        raise ApiError(502, "storage_error", str(exc)) from None
    return url


def delete_archive(storage: StorageClient, key: str) -> None:
    try:
        storage.delete(key)
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from exc
    except BackendError as exc:
        raise ApiError(502, "storage_error", str(exc)) from None
