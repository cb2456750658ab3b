"""One export job: stream the archive to storage over HTTP and describe the stored object.

Idempotent by construction: the object key is derived from the task id, storage replaces an object atomically, so a
redelivered request (worker killed, ack lost) rewrites the same object and reports it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy.orm import Session, sessionmaker

from services.exporter.archive import EventNotFound, ExportReport, ProgressCallback, generate_archive
from services.exporter.media import MediaLink, MediaSource
from shared.config import Settings
from shared.contracts import utc_iso

SignUrl = Callable[..., str]  # storage.signed_url(key, method=..., ttl=..., filename=..., backend=..., retention=...)


class ExportFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def export_key(event_id: int, task_id: str) -> str:
    return f"exports/event{event_id}/{task_id}/event{event_id}.zip"


def archive_filename(event_id: int) -> str:
    return f"event{event_id}.zip"


@dataclass
class _Digest:
    size: int = 0
    sha256: Any = None

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256()

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if chunk:
                self.size += len(chunk)
                self.sha256.update(chunk)
                yield chunk


def run_export(
    *,
    task_id: str,
    event_id: int,
    options: dict[str, bool],
    requested_at: datetime,
    db: sessionmaker[Session],
    sign_url: SignUrl,
    settings: Settings,
    on_progress: ProgressCallback,
    storage: str | None = None,
    before_upload: Callable[[], None] = lambda: None,
    media_link: MediaLink | None = None,
) -> dict[str, Any]:
    """Run the export; returns the export_completed fields or raises ExportFailed with a user-facing message.

    ``storage``: the backend record to store the archive in (``None``: the default backend). The archive follows
    that backend's keep days; the download link is the backend's own presigned URL where it can sign (S3, GCS),
    else the storage data plane's. ``before_upload`` runs just before the upload starts (the service checks there
    that this run still holds the task's lease). ``media_link``: a data-plane link for a platform object's key
    (the platform's own media are read from storage by key, ``services/exporter/media.py``).
    """
    key = export_key(event_id, task_id)
    source = MediaSource.from_settings(settings, media_link)
    report = ExportReport()
    digest = _Digest()
    chunks = generate_archive(db, event_id, options, fetcher=source, root_url=settings.gateway_url + "/",
                              exported_at=requested_at, report=report, on_progress=on_progress)
    try:
        first = next(chunks)  # surfaces "event not found" before any upload starts
    except EventNotFound as exc:
        raise ExportFailed("event_not_found", str(exc)) from exc

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    before_upload()
    # Signed links carry the public base URL; the upload goes to storage over the internal network.
    upload_link = sign_url(key, method="PUT", ttl=3600, backend=storage, retention=True)
    upload_url = settings.storage_internal_url + upload_link[len(settings.storage_url):]
    try:
        response = requests.put(upload_url, data=digest.wrap(body()), timeout=(10, 300),
                                headers={"Content-Type": "application/zip"})
    except requests.RequestException as exc:
        raise ExportFailed("storage_unavailable", f"could not upload the archive to storage: {exc}") from exc
    if response.status_code != 201:
        raise ExportFailed("storage_error", f"storage refused the archive: HTTP {response.status_code} "
                                            f"{response.text[:300]}")
    stored = response.json()
    sha256 = digest.sha256.hexdigest()
    if stored.get("sha256") != sha256 or stored.get("size") != digest.size:
        raise ExportFailed("storage_error", "storage recorded different bytes than were sent")

    ttl = settings.signed_url_ttl
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    download_url = sign_url(key, method="GET", ttl=ttl, filename=archive_filename(event_id))
    return {
        "key": key,
        "size": digest.size,
        "sha256": sha256,
        "download_url": download_url,
        "expires_at": utc_iso(expires_at),
        "warnings": report.warnings,
        "warnings_total": report.warnings_total,
        # The archive's own lifetime, as storage recorded it (its backend's keep days), not the link's.
        "retention": {"backend": stored.get("backend") or "default", "delete_at": stored.get("expires_at")},
    }
