"""Exports over HTTP: the request, the event's export history, the download redirect, deleting an archive, and the
storage events that say an archive is gone. The backends an export may name (``storage``) are listed here too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from werkzeug import Request, Response

from services.api_gateway import pagination, quotas, rules, tasks
from services.api_gateway.context import Gateway
from services.api_gateway.errors import BACKEND_REFUSALS, export_gone, storage_errors
from services.api_gateway.rules import Caller
from shared import contracts, object_keys
from shared.archive import formats
from shared.http import ApiError, json_response
from shared.models.gateway import Task
from shared.storage_client import BackendError

COMPLETED_FIELDS = ("download_url", "size", "sha256", "expires_at", "key", "warnings", "warnings_total", "retention")


def check_export_backend(gw: Gateway, storage_backend_id: str) -> None:
    """An export may only name a backend that exists and is active (400 otherwise)."""
    with storage_errors(*BACKEND_REFUSALS):
        record = gw.storage.describe_backend(storage_backend_id)
    if record is None:
        raise ApiError(400, "unknown_storage", f"There is no storage backend {storage_backend_id!r}.")
    if not record.get("active"):
        raise ApiError(400, "storage_inactive", f"Storage backend {storage_backend_id!r} is inactive; choose another "
                                                "one or leave 'storage' out.")


def list_formats() -> Response:
    """The export formats (``shared/archive/formats.py``): public, like the formats of a file dialog."""
    return json_response({"data": formats.describe_formats()})


def check_format(identifier: str) -> None:
    if identifier not in formats.FORMATS:
        raise ApiError(404, "unknown_format", str(formats.UnknownFormat(identifier)))


def request_export(gw: Gateway, caller: Caller, event_id: int, format: str, options: dict[str, bool],  # noqa: A002
                   storage_backend_id: str | None) -> Response:
    # The contract's field for a storage_backend_id is ``storage`` (the option clients send).
    named = {"storage": storage_backend_id} if storage_backend_id else {}
    with gw.db() as session:
        rules.require_event_manager(session, caller, event_id)
        quotas.check_jobs_in_flight(session, caller.id, gw.quota.jobs_in_flight)
        if storage_backend_id is not None:
            check_export_backend(gw, storage_backend_id)
        task = tasks.create_task(session, kind="export", event_id=event_id, user_id=caller.id, email=caller.email,
                                 params={"options": options, "format": format, **named})
        payload = contracts.make_payload(contracts.EXPORT_REQUESTED, task_id=task.id, event_id=event_id,
                                         requested_by={"id": caller.id, "email": caller.email}, options=options,
                                         format=format, **named)
        task_id = task.id
        tasks.enqueue(gw, session, task_id, contracts.EXPORT_REQUESTED, payload, "export")
    return tasks.accepted(task_id)


def list_exports(gw: Gateway, request: Request, caller: Caller, event_id: int) -> Response:
    """The event's exports, newest first, one page."""
    name = f"exports:{event_id}"
    page = pagination.page_query(gw, request, name, 2, (datetime, str))
    with gw.db() as session:
        rules.require_event_manager(session, caller, event_id)
        found = list(session.scalars(pagination.keyset(
            select(Task).where(Task.kind == "export", Task.event_id == event_id), (Task.created_at, Task.id), page)))
        return pagination.page_response(gw, request, name, page, found, tasks.sort_key, tasks.export_entry)


def _archive_key(session: Any, event_id: int, task_id: str, not_ready: str) -> str:
    task = session.get(Task, task_id)
    if task is None or task.kind != "export" or task.event_id != event_id:
        raise ApiError(404, "export_not_found", f"Event {event_id} has no export {task_id}.")
    if task.state != contracts.SUCCESS:
        raise ApiError(409, "export_not_ready", f"Export {task_id} is {task.state}{not_ready}")
    return task.result["key"]


def download(gw: Gateway, caller: Caller, event_id: int, path: str) -> Response:
    """302 to a fresh link (the backend's own presigned URL where it can sign: S3, GCS; else the storage data
    plane's), or 410 with the reason once the archive expired or was deleted."""
    task_id = path.split("/", 1)[0]
    with gw.db() as session:
        rules.require_event_manager(session, caller, event_id)
        key = _archive_key(session, event_id, task_id, ", not SUCCESS.")
    with storage_errors(BackendError, gone=lambda why: export_gone(task_id, why)):
        url = gw.storage.signed_url(key, method="GET", ttl=gw.config.signed_url_ttl,
                                    filename=object_keys.export_filename(key))
        if gw.storage.stat(key) is None:  # an object that vanished without storage deleting it
            raise export_gone(task_id)
    return Response(status=302, headers={"Location": url})


def delete(gw: Gateway, caller: Caller, event_id: int, path: str) -> Response:
    """Remove an export's archive now (organizers and admins); its links then answer 410."""
    task_id = path.split("/", 1)[0]
    with gw.db() as session:
        rules.require_export_deleter(session, caller, event_id)
        key = _archive_key(session, event_id, task_id, ": it has no archive.")
    with storage_errors(BackendError):
        gw.storage.delete(key)
    with gw.db() as session:  # at once, not only when storage's object_expired event arrives
        tasks.archive_gone(session, task_id, key, "deleted", contracts.utc_iso())
        session.commit()
    return Response(status=204)


def backend_choices(gw: Gateway, request: Request) -> Response:
    """The backends an export may name in ``storage`` (identifiers and descriptions only), one page: storage pages
    them (keyset on the identifier; the default entry, always first, sorts as ``""``)."""
    page = pagination.page_query(gw, request, "backend-choices", 1, (str,))
    with storage_errors(*BACKEND_REFUSALS):
        found = gw.storage.backend_choices(page.limit + 1, page.after[0] if page.after else None)
    return pagination.page_response(gw, request, "backend-choices", page, found,
                                    lambda c: ("" if c["default"] else c["storage_backend_id"],), lambda c: c)


def on_completed(gw: Gateway, payload: dict[str, Any]) -> None:
    data = contracts.load_payload(contracts.EXPORT_COMPLETED, payload)
    tasks.record_end(gw, data["task_id"], contracts.SUCCESS, {k: data[k] for k in COMPLETED_FIELDS})


def on_failed(gw: Gateway, payload: dict[str, Any]) -> None:
    data = contracts.load_payload(contracts.EXPORT_FAILED, payload)
    tasks.record_end(gw, data["task_id"], contracts.FAILURE, {"code": data["code"], "message": data["message"]})


def on_object_expired(gw: Gateway, payload: dict[str, Any]) -> None:
    """An export's archive was deleted or expired: its task and history stop offering the link."""
    data = contracts.load_payload(contracts.OBJECT_EXPIRED, payload)
    if data["task_id"] is None:
        return
    when = data["deleted_at"] if data["reason"] == "deleted" else (data["expires_at"] or data["deleted_at"])
    with gw.db() as session:
        tasks.archive_gone(session, data["task_id"], data["key"], data["reason"], when)
        session.commit()
