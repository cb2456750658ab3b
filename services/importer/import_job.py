"""One import job: archive from storage -> validated -> media re-hosted -> one transaction -> the new event.

Order, and why:
1. A request whose task already has an ``ImportedEvent`` row was done before (redelivered after the commit): report
   that event again, write nothing.
2. The archive is downloaded into a scratch directory of its own (``VAR_DIR/scratch/<task_id>-<random>``, removed at
   the end, or by ``scratch.sweep`` after a crash), so concurrent imports never see each other's files.
3. The reader validates every file and record before anything is written (it raises ``ArchiveError``); the same
   pass builds the loader's index and plans the media.
4. Media inside the archive are re-hosted (``media.py``) before the transaction, so the write lock is held only for
   the inserts; if the write then fails they are deleted again (best effort).
5. One transaction writes the event (ids remapped, the requester as organizer) and its ``ImportedEvent`` row, after
   checking that this run still holds the task's lease (shared/jobs/lease.py) inside that transaction. On
   SQLite it starts with ``BEGIN IMMEDIATE``, retried green, so a concurrent import waits instead of failing. The
   primary key of ``ImportedEvent`` settles a race between two deliveries of one request: the loser rolls back and
   reports the winner's event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.importer import media, transcode
from services.importer.scratch import job_scratch
from shared import object_keys
from shared.archive.loader import LOADED_ARRAYS, LoadError, LoadResult, SourceIndex, SourceIndexer, load_event
from shared.archive.reader import (
    ArchiveError,
    ArchiveLimits,
    EventArchive,
    limit_repeats,
    validate_archive,
)
from shared.config import Settings
from shared.contracts import MAX_WARNINGS
from shared.jobs.lease import Lease, LeaseLost
from shared.jobs.lifecycle import JobFailed
from shared.models.events import Event
from shared.models.importer import ImportedEvent
from shared.object_batch import BatchItem
from shared.storage_client import StorageClient, StorageRefused, StorageUnreachable

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int | None], None]

DOWNLOAD_CHUNK = 256 * 1024
LINK_TTL = 900
TRANSFER_TIMEOUT = (10, 120)  # (connect, read) seconds of the archive's download and each media upload
SQLITE_LOCK_WAIT = 120.0  # seconds an import waits for another one's write transaction
SQLITE_BUSY_TIMEOUT_MS = 30000  # what shared.db sets for every connection, restored after BEGIN IMMEDIATE
WRITE_ATTEMPTS = 3
_WARNINGS_TOTAL = "warnings_total"  # kept inside ImportedEvent.counts (no column of its own)
_FILE_ORDER = {file: n for n, file in enumerate(("event", *LOADED_ARRAYS))}


class ImportFailed(JobFailed):
    """The import cannot be done; the fields of ``import_failed``: the first problem (code, message, file,
    record_id, field) and every problem found (``errors``, at most the reader's cap; ``errors_total``)."""

    def __init__(self, code: str, message: str, *, file: str | None = None, record_id: Any = None,
                 field: str | None = None, errors: list[dict[str, Any]] | None = None,
                 errors_total: int | None = None) -> None:
        super().__init__(code, message)
        self.file, self.record_id, self.field = file, record_id, field
        self.errors, self.errors_total = errors, errors_total

    @classmethod
    def from_archive(cls, exc: ArchiveError) -> ImportFailed:
        return cls(**exc.to_dict(), errors=exc.errors or None, errors_total=exc.errors_total or None)

    def fields(self) -> dict[str, Any]:
        first = {"code": self.code, "message": self.message, "file": self.file,
                 "record_id": _plain_id(self.record_id), "field": self.field}
        errors = [{**e, "record_id": _plain_id(e.get("record_id"))} for e in self.errors] if self.errors else [first]
        return {**first, "errors": errors, "errors_total": self.errors_total or len(errors)}


def _plain_id(record_id: Any) -> Any:
    if record_id is not None and not isinstance(record_id, int | str):
        return str(record_id)
    return record_id


@dataclass
class ImportJob:
    """Everything one run needs; the service fills it from the request and its dependencies."""

    task_id: str
    key: str
    requester_id: int
    db: sessionmaker[Session]
    settings: Settings
    storage: StorageClient  # its links retried in place within the job's RetryWindow (the service's)
    on_progress: ProgressCallback = lambda stage, done, total: None
    pause: Callable[[float], None] = time.sleep  # eventlet.sleep in the service: waits must not block the hub
    limits: ArchiveLimits | None = None  # default: ArchiveLimits with the limits of the settings
    lease: Lease | None = None  # checked inside the write transaction: a run that lost it writes nothing
    strict: bool = False  # ?strict=true: every repair, skipped record or ignored file is a problem instead
    format: str = "json"  # the format the file was posted as (transcode.py: the content decides)


def event_url(settings: Settings, event_id: int) -> str:
    return f"{settings.gateway_url}/v1/events/{event_id}"


def completed_fields(settings: Settings, event_id: int, event_name: str, counts: dict[str, Any],
                     warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``import_completed`` fields for an event the import created (``counts`` as stored)."""
    total = counts.get(_WARNINGS_TOTAL, len(warnings))
    return {
        "id": event_id,
        "event_name": event_name,
        "url": event_url(settings, event_id),
        "counts": {k: v for k, v in counts.items() if k != _WARNINGS_TOTAL},
        "warnings": warnings[:MAX_WARNINGS],
        "warnings_total": total,
    }


def find_completed(db: sessionmaker[Session], settings: Settings, task_id: str) -> dict[str, Any] | None:
    """The result of an import of ``task_id`` already committed, or None."""
    with db() as session:
        row = session.execute(
            sa.select(ImportedEvent.event_id, ImportedEvent.counts, ImportedEvent.warnings, Event.name)
            .join(Event, Event.id == ImportedEvent.event_id)
            .where(ImportedEvent.task_id == task_id)
        ).first()
    if row is None:
        return None
    return completed_fields(settings, row.event_id, row.name, dict(row.counts or {}), list(row.warnings or []))


def run_import(job: ImportJob) -> dict[str, Any]:
    """Run the import; returns the ``import_completed`` fields or raises ``ImportFailed``."""
    done = find_completed(job.db, job.settings, job.task_id)
    if done is not None:
        return done
    stages = _Stages()
    try:
        with job_scratch(scratch_root(job.settings), job.task_id) as scratch:
            path = _download(job, scratch / "archive.zip")
            stages.done("download")
            try:
                limits = job.limits or replace(ArchiveLimits(), max_archive_bytes=job.settings.import_max_bytes,
                                               **job.settings.import_limits)
                with transcode.open_upload(path, job.format, scratch, limits, strict=job.strict,
                                           pause=job.pause) as archive:
                    return _import_archive(job, archive, stages)
            except ArchiveError as exc:
                raise ImportFailed.from_archive(exc) from exc
    finally:
        log.info("import %s: %s", job.task_id, stages)


def scratch_root(settings: Settings) -> Path:
    return settings.var_dir / "scratch"


def _download(job: ImportJob, target: Path) -> Path:
    limit = job.settings.import_max_bytes
    size = 0
    try:
        with job.storage.get(job.key, ttl=LINK_TTL, timeout=TRANSFER_TIMEOUT) as download, target.open("wb") as out:
            for chunk in download.chunks(DOWNLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ImportFailed("too_large", f"The archive is larger than {limit} bytes.")
                out.write(chunk)
                job.on_progress("download", size, download.size)
    except StorageRefused as exc:
        if exc.status == 404:
            raise ImportFailed("archive_missing", "The uploaded archive is no longer in storage.") from None
        raise ImportFailed("storage_error", f"Storage refused the archive: {exc}.") from None
    except StorageUnreachable as exc:
        raise ImportFailed("storage_unavailable", f"Could not download the archive from storage: {exc}") from exc
    return target


class _Source:
    """The archive as the loader reads it; with a plan, media paths are replaced by their re-hosted URLs (or null)."""

    def __init__(self, archive: EventArchive, plan: media.MediaPlan | None, pause: Callable[[float], None]) -> None:
        self.archive, self.plan, self.pause = archive, plan, pause

    def event(self) -> dict[str, Any]:
        event = self.archive.event()
        return event if self.plan is None else self.plan.rewrite("event", event)

    def records(self, file: str) -> Iterable[Any]:
        return _Records(self, file)


class _Records:
    """Re-iterable view of one file (the loader reads each file twice)."""

    def __init__(self, source: _Source, file: str) -> None:
        self.source, self.file = source, file

    def __iter__(self) -> Iterator[Any]:
        plan, pause, file = self.source.plan, self.source.pause, self.file
        for n, record in enumerate(self.source.archive.records(file)):
            if n % 500 == 499:
                pause(0)  # CPU-bound parsing: let heartbeats through (docs/architecture.md fact 4)
            yield record if plan is None else plan.rewrite(file, record)


class _Stages:
    """Seconds per stage of one import, for the log line operators read when an import is slow."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in self.seconds.items())


def _import_archive(job: ImportJob, archive: EventArchive, stages: _Stages) -> dict[str, Any]:
    # The validation pass also builds the loader's index and plans the media (their paths do not matter to the
    # index): no read of the archive but that one and the write.
    planner = media.MediaPlanner(archive, job.task_id, job.settings.gateway_url)
    planner.visit("event", archive.event())
    indexer = SourceIndexer()

    def visit(file: str, record: Any) -> None:
        planner.visit(file, record)
        indexer.add(file, record)

    validate_archive(archive, on_progress=job.on_progress, visit=visit)
    try:
        index = indexer.finish()
    except LoadError as exc:
        raise ImportFailed("invalid_archive", str(exc), file=exc.file, record_id=exc.record_id) from exc
    plan = planner.plan
    # Validation goes through the files in reference order; the media warnings keep the order of the files.
    plan.warnings.sort(key=lambda w: _FILE_ORDER.get(w.get("file"), len(_FILE_ORDER)))
    stages.done("validate and index")
    warnings = [*archive.warnings, *limit_repeats(plan.warnings)][:MAX_WARNINGS]
    warnings_total = archive.warnings_total + len(plan.warnings)

    uploaded: list[str] = []
    try:
        uploaded = media.rehost(archive, plan, object_keys.import_media_prefix(job.task_id), _uploader(job),
                                lambda done, total: job.on_progress("media", done, total))
        stages.done(f"media ({len(uploaded)} files)")
        result = _write(job, _Source(archive, plan, job.pause), index, archive.variant, warnings, warnings_total)
        in_child = isinstance(result, LoadResult) and result.rows_built_in_child
        stages.done("write (rows built in a child process)" if in_child else "write")
    except LeaseLost:
        raise  # the run that took over uses the same media keys: leave them
    except BaseException:
        _forget_media(job, list(plan.uploads.values()) if not uploaded else uploaded)
        raise
    if isinstance(result, dict):  # another delivery of this request won the race
        return result
    with job.db() as session:
        name = session.scalar(sa.select(Event.name).where(Event.id == result.event_id)) or ""
    counts = {**result.counts, _WARNINGS_TOTAL: warnings_total}
    return completed_fields(job.settings, result.event_id, name, counts, warnings)


def _uploader(job: ImportJob) -> media.UploadMany:
    def upload(prefix: str, items: Iterable[BatchItem], on_item: Callable[[BatchItem], None]) -> None:
        try:
            job.storage.put_many(prefix, items, link_ttl=LINK_TTL, timeout=TRANSFER_TIMEOUT, on_item=on_item)
        except StorageUnreachable as exc:
            raise ImportFailed("storage_unavailable", f"Could not store a media file: {exc}") from exc
        except StorageRefused as exc:
            raise ImportFailed("storage_error", f"Storage refused a media file: {exc}.") from None

    return upload


def _forget_media(job: ImportJob, keys: list[str]) -> None:
    """Delete media re-hosted by a failed run, unless another delivery of the request committed (it uses them)."""
    if not keys:
        return
    try:
        if find_completed(job.db, job.settings, job.task_id) is not None:
            return
        for key in keys:
            job.storage.delete(key)
    except Exception:  # best effort: the import's own error is what the requester must see
        log.warning("could not delete the media of failed import %s", job.task_id, exc_info=True)


def _write(job: ImportJob, source: _Source, index: SourceIndex, variant: str, warnings: list[dict[str, Any]],
           warnings_total: int) -> LoadResult | dict[str, Any]:
    """The one transaction; returns the load result, or the existing result if this task was imported already."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        with job.db() as session:
            conn = session.connection()
            _begin_write(conn, job.pause)
            if job.lease is not None:
                job.lease.check(conn)  # fenced: no other run can take the task over until this commits
            if conn.dialect.name == "sqlite" and session.get(ImportedEvent, job.task_id) is not None:
                # Holding the write lock, a delivery that waited for its twin's transaction sees the commit here.
                session.rollback()
                return _completed(job)
            try:
                result = load_event(conn, source, keep_ids=False, owner_user_id=job.requester_id, index=index,
                                    on_progress=job.on_progress,
                                    rows_in_child=None if job.settings.import_rows_in_child else False)
                counts = {**result.counts, _WARNINGS_TOTAL: warnings_total}
                conn.execute(sa.insert(ImportedEvent).values(
                    task_id=job.task_id, event_id=result.event_id, variant=variant, counts=counts,
                    warnings=warnings[:MAX_WARNINGS]))
                if job.lease is not None:
                    job.lease.check(conn)  # renewed at the commit: the lock kept the keeper from renewing meanwhile
                session.commit()
                return result
            except LoadError as exc:
                session.rollback()
                raise ImportFailed("invalid_archive", str(exc), file=exc.file, record_id=exc.record_id) from exc
            except IntegrityError as exc:
                session.rollback()
                if session.get(ImportedEvent, job.task_id) is not None:
                    return _completed(job)  # the twin delivery committed first: report its event
                # A unique value taken concurrently (an identifier on PostgreSQL): the next attempt sees it.
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info("import %s: integrity conflict, attempt %d: %s", job.task_id, attempt, exc.orig)
    raise AssertionError("unreachable")


def _completed(job: ImportJob) -> dict[str, Any]:
    done = find_completed(job.db, job.settings, job.task_id)
    if done is None:  # an ImportedEvent row always has its event (ON DELETE CASCADE)
        raise RuntimeError(f"import {job.task_id} is recorded without its event")
    return done


def _begin_write(conn: Connection, pause: Callable[[float], None]) -> None:
    """On SQLite take the write lock now (BEGIN IMMEDIATE), waiting green: sqlite's own busy wait would block the
    whole process, including the import that holds the lock. Other databases need nothing."""
    if conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    deadline = time.monotonic() + SQLITE_LOCK_WAIT
    delay = 0.01
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
                    raise
                if time.monotonic() > deadline:
                    raise ImportFailed("database_busy", "The database stayed locked; try the import again.") \
                        from exc
                pause(delay)
                delay = min(delay * 2, 0.2)
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
