"""The gateway's side of imports: storing the upload, the import-jobs listing, results from importer events, media.

Plain functions; ``service.py`` wires them to entrypoints.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from werkzeug import Request, Response

from services.api_gateway import pagination, quotas, tasks, uploads
from services.api_gateway.context import Gateway
from services.api_gateway.rules import Caller
from services.api_gateway.tasks import task_view
from services.api_gateway.uploads import Store, Upload, put_to_storage
from shared import contracts
from shared.contracts import SUCCESS
from shared.http import ApiError
from shared.models.gateway import Task
from shared.object_keys import import_key
from shared.schedule.readers import IMPORT_FORMATS
from shared.schedule.readers import import_format as known_format
from shared.storage_client import StorageClient

log = logging.getLogger(__name__)

UPLOAD_LINK_TTL = 3600


def storage_writer(storage: StorageClient, task_id: str,
                   meter: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None, **link: Any) -> Store:
    """A ``Store`` that streams the upload to storage (``StorageClient.put``).

    ``meter`` sees every chunk on the way (the byte quota); ``link`` goes to the signed link (``owner``,
    ``keep_seconds``)."""

    def store(filename: str, chunks: Iterator[bytes]) -> dict[str, Any]:
        key = import_key(task_id, filename)
        stored = put_to_storage(storage, key, meter(chunks) if meter else chunks, content_type="application/zip",
                                what="the archive", link_ttl=UPLOAD_LINK_TTL, **link)
        return {"key": key, **stored}

    return store


def archive_key(task: Task | None) -> str | None:
    """Where an import task's uploaded archive is stored (``None`` for other tasks)."""
    if task is None or task.kind != "import":
        return None
    key = (task.params or {}).get("key")
    return key if isinstance(key, str) else None


def task_params(upload: Upload, strict: bool = False, fmt: str = "json") -> dict[str, Any]:
    return {"filename": upload.filename, "key": upload.key, "size": upload.size, "sha256": upload.sha256,
            "strict": strict, "format": fmt}


def import_format(name: str) -> str:
    """The import format of ``POST /v1/events/import/<name>`` (identifiers, and the Open Event frontend's names);
    404 for anything else, before the upload is read."""
    found = known_format(name)
    if found is None:
        raise ApiError(404, "unknown_format", f"No import format {name[:40]!r}; known formats: "
                                              f"{', '.join(IMPORT_FORMATS)}.")
    return found


def import_entry(task: Task) -> dict[str, Any]:
    """One line of ``GET /v1/import-jobs``: the task's ``state``/``status``/``progress``/``result`` as in its own view
    (README, "Task contract"), with the upload's name and size."""
    view = task_view(task)
    params = task.params or {}
    entry = {
        "task_id": task.id,
        "task_url": f"/v1/tasks/{task.id}",
        "state": view["state"],
        "status": view["status"],
        "filename": params.get("filename"),
        "size": params.get("size"),
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
        "event_id": task.event_id if task.state == SUCCESS else None,
        "result": view.get("result"),
    }
    if "progress" in view:
        entry["progress"] = view["progress"]
    return entry


def completed_result(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("id", "event_name", "url", "counts", "warnings", "warnings_total")}


def failed_result(data: dict[str, Any]) -> dict[str, Any]:
    """The first problem at the top level (for older clients), and every problem found."""
    first = {k: data.get(k) for k in ("code", "message", "file", "record_id", "field")}
    errors = data.get("errors") or [first]
    return {**first, "errors": errors, "errors_total": data.get("errors_total") or len(errors)}


# --- routes and importer events ----------------------------------------------------------------------------------

def request_import(gw: Gateway, caller: Caller, request: Request, strict: bool, fmt: str = "json") -> Response:
    """Stream the archive to storage (no database session held meanwhile), then queue the import."""
    with gw.db() as session:
        quotas.check_jobs_in_flight(session, caller.id, gw.quota.jobs_in_flight)
    budget = gw.byte_budget(caller.id)
    budget.check_start(request.content_length)
    task_id = str(uuid.uuid4())

    # Counted against the uploader's byte quota; expires IMPORT_ARCHIVE_KEEP_DAYS after the upload unless the end of
    # the import (expire_archive) restarts the clock.
    store = storage_writer(gw.storage, task_id, meter=budget.meter, owner=caller.id,
                           keep_seconds=gw.quota.import_archive_keep_seconds)
    # A schedule file may carry any name (its content decides); the Open Event zip keeps its .zip check.
    upload = uploads.receive_archive(request, max_bytes=gw.config.import_max_bytes, store=store,
                                     extensions=uploads.ALLOWED_EXTENSIONS if fmt == "json" else None)
    requester = {"id": caller.id, "email": caller.email}
    with gw.db() as session:
        tasks.create_task(session, kind="import", event_id=None, user_id=caller.id, email=caller.email,
                          params=task_params(upload, strict, fmt), task_id=task_id)
        payload = contracts.make_payload(contracts.IMPORT_REQUESTED, task_id=task_id, event_id=None,
                                         requested_by=requester,
                                         key=upload.key, filename=upload.filename, size=upload.size, strict=strict,
                                         format=fmt)
        tasks.enqueue(gw, session, task_id, contracts.IMPORT_REQUESTED, payload, "import")
    return tasks.accepted(task_id)


def list_imports(gw: Gateway, request: Request, caller: Caller) -> Response:
    """The caller's imports, newest first, one page."""
    name = f"imports:{caller.id}"
    page = pagination.page_query(gw, request, name, 2, (datetime, str))
    with gw.db() as session:
        found = list(session.scalars(pagination.keyset(
            select(Task).where(Task.kind == "import", Task.requested_by == caller.id), (Task.created_at, Task.id),
            page)))
        return pagination.page_response(gw, request, name, page, found, tasks.sort_key, import_entry)


def on_completed(gw: Gateway, payload: dict[str, Any]) -> None:
    data = contracts.load_payload(contracts.IMPORT_COMPLETED, payload)
    with gw.db() as session:
        if tasks.finish(session, data["task_id"], contracts.SUCCESS, completed_result(data)):
            session.execute(update(Task).where(Task.id == data["task_id"]).values(event_id=data["id"]))
        session.commit()
    expire_archive(gw, data["task_id"])


def on_failed(gw: Gateway, payload: dict[str, Any]) -> None:
    data = contracts.load_payload(contracts.IMPORT_FAILED, payload)
    tasks.record_end(gw, data["task_id"], contracts.FAILURE, failed_result(data))
    expire_archive(gw, data["task_id"])


def expire_archive(gw: Gateway, task_id: str) -> None:
    """The import ended: its archive goes IMPORT_ARCHIVE_KEEP_DAYS from now (re-hosted media stay)."""
    with gw.db() as session:
        key = archive_key(session.get(Task, task_id))
    if key is None:
        return
    try:
        gw.storage.expire_after(key, gw.quota.import_archive_keep_seconds)
    except Exception:  # the expiry set at upload still applies: the archive goes at most a little later
        log.warning("could not restart the expiry of import archive %s", key, exc_info=True)
