"""Streaming a schedule format's text to the exporter: read the schedule, render it, hand out byte chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import eventlet
from sqlalchemy.orm import Session, sessionmaker

from shared.archive.writer import EventNotFound, ExportReport, ProgressCallback
from shared.schedule.snapshot import Schedule, load_schedule

CHUNK_BYTES = 64 * 1024
Renderer = Callable[[Schedule], Iterable[str]]


def chunked(pieces: Iterable[str], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """UTF-8 chunks of about ``size`` bytes; the hub gets a turn between them (heartbeats must not starve)."""
    buffer: list[str] = []
    length = 0
    for piece in pieces:
        buffer.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(buffer).encode("utf-8")
            eventlet.sleep(0)
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8")


def read_schedule(db: sessionmaker[Session], event_id: int, root_url: str, generated_at: datetime) -> Schedule:
    with db() as session:
        try:
            return load_schedule(session, event_id, root_url=root_url, generated_at=generated_at)
        except LookupError as exc:
            raise EventNotFound(f"Event {event_id} does not exist (deleted after the export was requested?)") from exc


def note_skipped(schedule: Schedule, report: ExportReport) -> None:
    if schedule.skipped:
        report.warn(code="sessions_not_scheduled", file="sessions",
                    message=f"{schedule.skipped} session(s) left out: no start time, or not accepted "
                            "(rejected, pending, draft, withdrawn...)")


def stream_schedule(db: sessionmaker[Session], event_id: int, render: Renderer, *, root_url: str,
                    exported_at: datetime, report: ExportReport, on_progress: ProgressCallback) -> Iterator[bytes]:
    """The rendered schedule of the event, chunk by chunk (``EventNotFound`` on the first chunk)."""
    on_progress("schedule", 0, None)
    schedule = read_schedule(db, event_id, root_url, exported_at)
    note_skipped(schedule, report)
    yield from chunked(render(schedule))
    on_progress("schedule", len(schedule.talks), len(schedule.talks))
