"""One export job: stream the archive to storage (``storage.put(key, archive_chunks)``) and describe the stored
object.

The object key is derived from the task id and storage replaces an object atomically, so a rerun (worker killed
before it reached an outcome) rewrites the same object. A rerun's bytes differ (media members are written in the
order their fetches end): a run that reached its outcome saved it under the lease, and a run taking over reports that
outcome instead of exporting again (``shared/jobs/lifecycle.py``); a run that lost the lease breaks off its upload
before the body ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.exporter.media import STORAGE_LINK_TTL, MediaLink, media_source
from shared.archive.formats import DEFAULT_FORMAT, get_format
from shared.archive.writer import EventNotFound, ExportReport, ProgressCallback
from shared.config import Settings
from shared.contracts import utc_iso
from shared.jobs.lifecycle import JobFailed
from shared.media_fetcher import MediaFetchError
from shared.object_keys import export_key
from shared.storage_client import (
    BackendError,
    InactiveBackend,
    InvalidKey,
    ObjectGone,
    ObjectNotFound,
    StorageClient,
    StorageRefused,
    StorageUnreachable,
    UnknownBackend,
)

# Storage refusals that are the export's outcome, not a fault of the exporter (their messages are for people).
STORAGE_REFUSALS = (UnknownBackend, InactiveBackend, BackendError, ObjectGone)
UPLOAD_LINK_TTL = 3600


class ExportFailed(JobFailed):
    """The export cannot be done: ``code`` and a message for people (``export_failed``)."""


@contextmanager
def _refusals_fail_the_export() -> Iterator[None]:
    try:
        yield
    except STORAGE_REFUSALS as exc:
        raise ExportFailed("storage_error", str(exc)) from None


def media_link(storage: StorageClient) -> MediaLink:
    """The platform's own media: an internal data-plane link for the key, only if storage holds that object."""

    def link(key: str) -> str:
        try:
            url = storage.platform_link(key, ttl=STORAGE_LINK_TTL)
        except (ObjectNotFound, InvalidKey) as exc:
            raise MediaFetchError(f"no such media on this platform: {exc}", "media_missing", key) from None
        except ObjectGone as exc:
            raise MediaFetchError(f"this media was deleted: {exc}", "media_gone", key) from None
        except STORAGE_REFUSALS as exc:
            raise ExportFailed("storage_error", str(exc)) from None
        if url is None:
            raise MediaFetchError("storage did not give a data-plane link for a platform object", "http_error", key)
        return url

    return link


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
    storage: StorageClient,
    settings: Settings,
    on_progress: ProgressCallback,
    backend: str | None = None,
    before_upload: Callable[[], None] = lambda: None,
    export_format: str = DEFAULT_FORMAT,
) -> dict[str, Any]:
    """Run the export; returns the export_completed fields or raises ExportFailed with a user-facing message.

    ``backend``: the ``storage_backend_id`` to store the archive in (``None``: the default backend). The archive
    follows that backend's keep days; the download link is the backend's own presigned URL where it can sign (S3,
    GCS), else the storage data plane's. ``before_upload`` runs just before the upload starts and again just before
    its body ends (the service checks there that this run still holds the task's lease). The platform's own media
    are read from storage by key (``media_link``, ``services/exporter/media.py``). ``export_format``: an identifier
    of ``shared.archive.formats`` (what writes the bytes, and their file name and content type).
    """
    fmt = get_format(export_format)
    key = export_key(event_id, task_id, fmt.extension)
    source = media_source(settings, media_link(storage))
    report = ExportReport()
    digest = _Digest()
    chunks = fmt.write(db, event_id, options, fetcher=source, root_url=settings.gateway_url + "/",
                       exported_at=requested_at, report=report, on_progress=on_progress)
    try:
        first = next(chunks)  # surfaces "event not found" before any upload starts
    except EventNotFound as exc:
        raise ExportFailed("event_not_found", str(exc)) from exc

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks
        # Once more before the body ends: a run that lost the lease while streaming (its process stalled past the
        # lease) breaks off its upload here, before storage commits it over the bytes of the run that took over.
        before_upload()

    before_upload()
    try:
        with _refusals_fail_the_export():
            stored = storage.put(key, digest.wrap(body()), content_type=fmt.content_type, link_ttl=UPLOAD_LINK_TTL,
                                 backend=backend, retention=True)
    except StorageUnreachable as exc:
        raise ExportFailed("storage_unavailable", f"could not upload the archive to storage: {exc}") from exc
    except StorageRefused as exc:
        raise ExportFailed("storage_error", f"storage refused the archive: HTTP {exc.status} {exc.body}") from None
    sha256 = digest.sha256.hexdigest()
    if stored.get("sha256") != sha256 or stored.get("size") != digest.size:
        raise ExportFailed("storage_error", "storage recorded different bytes than were sent")

    ttl = settings.signed_url_ttl
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    with _refusals_fail_the_export():
        download_url = storage.signed_url(key, method="GET", ttl=ttl, filename=fmt.filename(event_id))
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
        "format": fmt.identifier,
    }
