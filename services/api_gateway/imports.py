"""The gateway's side of imports: storing the upload, the import-jobs listing, results from importer events, media.

Plain functions; ``service.py`` wires them to entrypoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from services.api_gateway.tasks import task_view
from services.api_gateway.uploads import Store, Upload, put_to_storage
from shared.contracts import SUCCESS
from shared.http import ApiError
from shared.models import Task
from shared.object_keys import import_key
from shared.storage_client import StorageClient

UPLOAD_LINK_TTL = 3600
# Re-hosted media are addressed as <GATEWAY_URL>/media/<key>: a stable URL that redirects to a short-lived signed
# storage link, so stored event records never hold a link that expires or dies with a SECRET_KEY rotation.
MEDIA_LINK_TTL = 3600
MEDIA_REDIRECT_MAX_AGE = 300


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


def task_params(upload: Upload, strict: bool = False) -> dict[str, Any]:
    return {"filename": upload.filename, "key": upload.key, "size": upload.size, "sha256": upload.sha256,
            "strict": strict}


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


def parse_strict(value: str | None) -> bool:
    """``?strict=true`` on an import; absent or ``false``: hand-made archives are repaired where they can be."""
    text = "false" if value is None else value
    # Exactly true or false, as for the other boolean query parameters (force_local).
    if text == "true":
        return True
    if text == "false":
        return False
    raise ApiError(400, "invalid_parameter", f"strict must be true or false, not '{(value or '')[:50]}'.")

