"""Turn one event into an Open Event legacy archive, produced as a stream of zip bytes.

Order of work: media members first (``media_pass.py``: fetched concurrently under one deadline, each written as it
arrives; only the zip path of each fetched item is remembered for the JSON pass, which points records at it), then
the JSON files in format order, then ``meta`` with per-file sha256 and record counts. Memory stays flat: records
stream from the database one at a time and each is serialized, deflated and handed on before the next is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import eventlet
from sqlalchemy.orm import Session, sessionmaker

from shared.archive import legacy, records
from shared.archive.media_pass import Fetched, MediaItem, MediaSource, fetch_concurrently, media_items
from shared.archive.zipstream import HashingWriter, ZipStream
from shared.contracts import MAX_WARNINGS, utc_iso
from shared.event_stats import record_counts
from shared.media_fetcher import MediaFetcher

FORMAT_VERSION = "1.0"
GENERATOR = "event-portability exporter"
CHUNK_BYTES = 256 * 1024

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
    # Give heartbeats and other greenthreads a turn between CPU-bound chunks (docs/architecture.md fact 4).
    eventlet.sleep(0)


def generate_archive(
    db: sessionmaker[Session],
    event_id: int,
    options: dict[str, bool],
    *,
    fetcher: MediaFetcher | MediaSource,
    root_url: str,
    exported_at: datetime,
    report: ExportReport,
    on_progress: ProgressCallback = lambda stage, done, total: None,
) -> Iterator[bytes]:
    """Yield the archive's bytes chunk by chunk; ``report`` holds warnings and file digests at the end.

    ``fetcher``: where media come from (``MediaSource``); a bare ``MediaFetcher`` fetches every URL
    through the guard with the default bounds.
    """
    source = fetcher if isinstance(fetcher, MediaSource) else MediaSource(fetcher)
    with db() as session:
        try:
            event = records.event_record(session, event_id)
        except LookupError as exc:
            raise EventNotFound(f"Event {event_id} does not exist (deleted after the export was requested?)") from exc
        counts = record_counts(session, event_id)

    # Timestamps come from the request, not the clock: a redelivered request that runs twice at once (lost heartbeat)
    # then writes the same bytes to the same key, so the digest the task reports always matches the stored object
    # (with media, only as far as both runs fetch the same files: media members are in order of arrival).
    zipper = ZipStream(date_time=exported_at.timetuple()[:6])
    included: dict[tuple[str, Any, str], str] = {}  # (file, record id, field) -> zip path of the fetched media

    enabled = [m for m in legacy.MEDIA_FIELDS if options.get(m.flag)]
    if enabled:
        yield from _write_media(db, event_id, event, enabled, zipper, source, report, included, on_progress)

    for name in legacy.FILES:
        if name == "meta":
            continue
        on_progress(name, 0, counts.get(name))
        with db() as session, zipper.member(name) as handle:
            out = HashingWriter(handle)
            if name == "event":
                out.write(legacy.dump_object(_localize(name, event, enabled, included)).encode())
                count = 1
            else:
                counter = _Counter(records.iter_records(session, event_id, name))
                pieces = legacy.iter_array_text(_localize(name, rec, enabled, included) for rec in counter)
                for piece in pieces:
                    out.write(piece.encode())
                    if zipper.pending >= CHUNK_BYTES:
                        _yield_hub()
                        yield zipper.drain()
                        on_progress(name, counter.count, counts.get(name))
                count = counter.count
            out.finish()
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


def _localize(file: str, record: dict[str, Any], enabled: list, included: dict) -> dict[str, Any]:
    """Point included media at their zip paths; media not included (or not fetched) keep their URL."""
    for media in enabled:
        if media.file == file and (file, record.get("id"), media.field) in included:
            record[media.field] = included[file, record.get("id"), media.field]
    return record


def _write_media(db, event_id, event, enabled, zipper, source, report, included, on_progress):  # noqa: ANN001, ANN202
    # Every slot's items are listed first (no read transaction held while fetching), then fetched in one pass.
    items: list[MediaItem] = []
    problems: list[tuple[int, dict[str, Any]]] = []  # (position in record order, warning)
    for media in enabled:
        with db() as session:
            rows = [event] if media.file == "event" else records.iter_records(session, event_id, media.file)
            for found in media_items(media.file, media, rows):
                if isinstance(found, MediaItem):
                    items.append(found)
                    continue
                record, value = found
                problems.append((len(items), dict(
                    code="media_not_url", message=f"{media.field} is not an http(s) URL; kept as is",
                    file=media.file, record_id=record.get("id"), field=media.field, url=value)))
    position = {id(item): n for n, item in enumerate(items)}
    deadline = time.monotonic() + source.deadline_seconds  # one deadline for the whole media pass
    done = 0
    on_progress("media", 0, len(items))
    for fetched in fetch_concurrently(items, source, deadline):
        item = fetched.item
        try:
            if fetched.error is not None:
                problems.append((position[id(item)], dict(
                    code=fetched.error.code, message=str(fetched.error), file=item.file, record_id=item.record_id,
                    field=item.field, url=item.url)))
            else:
                yield from _copy_media(fetched, zipper)
                included[item.key] = fetched.path
        finally:
            fetched.close()
        done += 1
        on_progress("media", done, len(items))
    for _, warning in sorted(problems, key=lambda problem: problem[0]):  # stable: record order, whatever finished first
        report.warn(**warning)


def _copy_media(fetched: Fetched, zipper: ZipStream) -> Iterator[bytes]:
    assert fetched.spool is not None and fetched.path is not None
    # Media are compressed formats already (JPEG, PNG, MP3, MP4, PDF): deflating them again burns CPU for ~0%.
    with zipper.member(fetched.path.lstrip("/"), large=fetched.size > 2**31, deflate=False) as handle:
        while chunk := fetched.spool.read(CHUNK_BYTES):
            handle.write(chunk)
            if zipper.pending >= CHUNK_BYTES:
                _yield_hub()
                yield zipper.drain()
