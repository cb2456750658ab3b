"""The gateway's side of imports: storing the upload, the import-jobs listing, results from importer events, media.

Plain functions; ``service.py`` wires them to entrypoints.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import requests

from services.api_gateway.tasks import task_view
from services.api_gateway.uploads import Store, Upload, import_key
from shared.config import Settings
from shared.contracts import SUCCESS
from shared.http import ApiError
from shared.models import Task
from shared.rpc import RpcTimeout

UPLOAD_LINK_TTL = 3600
# Re-hosted media are addressed as <GATEWAY_URL>/media/<key>: a stable URL that redirects to a short-lived signed
# storage link, so stored event records never hold a link that expires or dies with a SECRET_KEY rotation.
MEDIA_LINK_TTL = 3600
MEDIA_REDIRECT_MAX_AGE = 300
_MEDIA_KEY = re.compile(r"imports/[0-9a-f-]{36}/media/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")

SignUrl = Callable[..., str]  # storage.signed_url(key, method=..., ttl=...) with a deadline


def storage_writer(sign_url: SignUrl, settings: Settings, task_id: str) -> Store:
    """A ``Store`` that streams the upload to storage with a chunked HTTP PUT on a signed link."""

    def store(filename: str, chunks: Iterator[bytes]) -> dict[str, Any]:
        key = import_key(task_id, filename)
        try:
            url = sign_url(key, method="PUT", ttl=UPLOAD_LINK_TTL)
        except RpcTimeout as exc:
            raise ApiError(503, "storage_unavailable", "Storage is not answering; try the upload again later.") \
                from exc
        # Signed links carry the public base URL; the upload goes to storage over the internal network (a link a
        # backend presigned for itself, S3 or GCS, is used as it is).
        if url.startswith(settings.storage_url + "/"):
            url = settings.storage_internal_url + url[len(settings.storage_url):]
        with requests.Session() as http:
            http.trust_env = False  # an internal hop: never through a proxy from the environment
            try:
                response = http.put(url, data=chunks, headers={"Content-Type": "application/zip"}, timeout=(10, 300))
            except requests.RequestException as exc:
                raise ApiError(503, "storage_unavailable", "The archive could not be stored; try again later.") \
                    from exc
        if response.status_code != 201:
            raise ApiError(503, "storage_error", f"Storage refused the archive (HTTP {response.status_code}).")
        stored = response.json()
        return {"key": key, "size": stored["size"], "sha256": stored["sha256"]}

    return store


def task_params(upload: Upload) -> dict[str, Any]:
    return {"filename": upload.filename, "key": upload.key, "size": upload.size, "sha256": upload.sha256}


def import_entry(task: Task) -> dict[str, Any]:
    """One line of ``GET /v1/import-jobs``."""
    view = task_view(task)
    params = task.params or {}
    return {
        "task_id": task.id,
        "task_url": f"/v1/tasks/{task.id}",
        "state": task.state,
        "filename": params.get("filename"),
        "size": params.get("size"),
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
        "event_id": task.event_id if task.state == SUCCESS else None,
        "result": view.get("result"),
    }


def completed_result(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("id", "event_name", "url", "counts", "warnings", "warnings_total")}


def failed_result(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in ("code", "message", "file", "record_id", "field")}


def check_media_key(key: str) -> str:
    """Only media re-hosted by imports are public through ``/media/``; anything else is a 404."""
    if not _MEDIA_KEY.fullmatch(key) or ".." in key or "/./" in key:
        raise ApiError(404, "not_found", "No media exists at this address.")
    return key
