"""Turn one event into an Open Event legacy archive, produced as a stream of zip bytes.

Order of work: media members first (only their fetch outcome is remembered: the zip path of a record's media is
fixed by the format, so the JSON pass needs nothing but the set of failures), then the JSON files in format order,
then ``meta`` with per-file sha256 and record counts. Memory stays flat: records stream from the database one at a
time and each is serialized, deflated and handed on before the next is read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import eventlet
from sqlalchemy.orm import Session, sessionmaker

from services.exporter.zipstream import HashingWriter, ZipStream
from shared.archive import legacy, records
from shared.contracts import utc_iso
from shared.event_stats import record_counts
from shared.media_fetcher import MediaFetcher, MediaFetchError

FORMAT_VERSION = "1.0"
GENERATOR = "event-portability exporter"
CHUNK_BYTES = 256 * 1024
MAX_WARNINGS = 200  # the rest are counted, not listed: a result must stay small enough for a task row and an event

ProgressCallback = Callable[[str, int, int | None], None]


class EventNotFound(Exception):
    pass


@dataclass
class ExportReport:
    """Filled in while the archive streams; complete once the stream is exhausted."""

    warnings: list[dict[str, Any]] = field(default_factory=list)
    warnings_total: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def warn(self, **warning: Any) -> None:
        self.warnings_total += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)


def _yield_hub() -> None:
    # Give heartbeats and other greenthreads a turn between CPU-bound chunks (PLATFORM_NOTES 4).
    eventlet.sleep(0)


def generate_archive(
    db: sessionmaker[Session],
    event_id: int,
    options: dict[str, bool],
    *,
    fetcher: MediaFetcher,
    root_url: str,
    exported_at: datetime,
    report: ExportReport,
    on_progress: ProgressCallback = lambda stage, done, total: None,
) -> Iterator[bytes]:
    """Yield the archive's bytes chunk by chunk; ``report`` holds warnings and file digests at the end."""
    with db() as session:
        try:
            event = records.event_record(session, event_id)
        except LookupError as exc:
            raise EventNotFound(f"Event {event_id} does not exist (deleted after the export was requested?)") from exc
        counts = record_counts(session, event_id)

    # Timestamps come from the request, not the clock: a redelivered request that runs twice at once (lost heartbeat)
    # then writes the same bytes to the same key, so the digest the task reports always matches the stored object.
    zipper = ZipStream(date_time=exported_at.timetuple()[:6])
    failed_media: set[tuple[str, Any, str]] = set()

    enabled = [m for m in legacy.MEDIA_FIELDS if options.get(m.flag)]
    if enabled:
        yield from _write_media(db, event_id, event, enabled, zipper, fetcher, report, failed_media, on_progress)

    for name in legacy.FILES:
        if name == "meta":
            continue
        on_progress(name, 0, counts.get(name))
        with db() as session, zipper.member(name) as handle:
            out = HashingWriter(handle)
            if name == "event":
                out.write(legacy.dump_object(_localize(name, event, enabled, failed_media)).encode())
                count = 1
            else:
                counter = _Counter(records.iter_records(session, event_id, name))
                pieces = legacy.iter_array_text(_localize(name, rec, enabled, failed_media) for rec in counter)
                for piece in pieces:
                    out.write(piece.encode())
                    if zipper.pending >= CHUNK_BYTES:
                        _yield_hub()
                        yield zipper.drain()
                        on_progress(name, counter.count, counts.get(name))
                count = counter.count
            report.files[name] = {"count": count, "sha256": out.sha256.hexdigest(), "size": out.size}
        on_progress(name, count, count)
        if zipper.pending:
            _yield_hub()
            yield zipper.drain()

    meta = {
        "root_url": root_url,
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "exported_at": utc_iso(exported_at),
        "files": report.files,
    }
    with zipper.member("meta") as handle:
        handle.write(legacy.dump_object(meta, sort_keys=True).encode())
    yield zipper.close()


class _Counter:
    def __init__(self, iterable: Iterator[dict[str, Any]]) -> None:
        self._it = iter(iterable)
        self.count = 0

    def __iter__(self) -> _Counter:
        return self

    def __next__(self) -> dict[str, Any]:
        item = next(self._it)
        self.count += 1
        return item


def _localize(file: str, record: dict[str, Any], enabled: list, failed: set) -> dict[str, Any]:
    """Point included media at their zip paths; media not included (or not fetched) keep their URL."""
    for media in enabled:
        if media.file != file:
            continue
        url = record.get(media.field)
        if _fetchable(url) and (file, record.get("id"), media.field) not in failed:
            record[media.field] = media.path(record, url)
    return record


def _fetchable(url: Any) -> bool:
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def _write_media(db, event_id, event, enabled, zipper, fetcher, report, failed, on_progress):  # noqa: ANN001, ANN202
    done = 0
    for media in enabled:
        with db() as session:
            source = [event] if media.file == "event" else records.iter_records(session, event_id, media.file)
            for record in source:
                url = record.get(media.field)
                if url is None or url == "":
                    continue
                key = (media.file, record.get("id"), media.field)
                if not _fetchable(url):
                    failed.add(key)
                    report.warn(code="media_not_url", message=f"{media.field} is not an http(s) URL; kept as is",
                                file=media.file, record_id=record.get("id"), field=media.field, url=str(url))
                    continue
                try:
                    yield from _copy_media(fetcher, url, media.path(record, url), zipper)
                except MediaFetchError as exc:
                    failed.add(key)
                    report.warn(code=exc.code, message=str(exc), file=media.file, record_id=record.get("id"),
                                field=media.field, url=url)
                done += 1
                on_progress("media", done, None)


def _copy_media(fetcher: MediaFetcher, url: str, zip_path: str, zipper: ZipStream) -> Iterator[bytes]:
    # Spool first: a fetch can fail half-way, and a member half-written into a streamed zip cannot be taken back.
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
        with fetcher.open(url) as media:
            for chunk in media.iter_chunks():
                spool.write(chunk)
                _yield_hub()
        size = spool.tell()
        spool.seek(0)
        # Media are compressed formats already (JPEG, PNG, MP3, MP4, PDF): deflating them again burns CPU for ~0%.
        with zipper.member(zip_path.lstrip("/"), large=size > 2**31, deflate=False) as handle:
            while chunk := spool.read(CHUNK_BYTES):
                handle.write(chunk)
                if zipper.pending >= CHUNK_BYTES:
                    _yield_hub()
                    yield zipper.drain()

