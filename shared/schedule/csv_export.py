"""Sessions and speakers as two CSV files in a zip (``sessions.csv``, ``speakers.csv``), for spreadsheets.

This is the organizer's working list, not the public schedule: every session is in it, with its state, whether or
not it is scheduled. Times are local to the event with their offset; durations ``HH:MM``. UTF-8 with a BOM (so
spreadsheet programs detect the encoding), CRLF rows as RFC 4180 has them. Cells that a spreadsheet would run as a
formula (starting with ``= + - @``, a tab or CR) get a leading apostrophe, and text is cleaned like every other
format's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import eventlet
from sqlalchemy.orm import Session, sessionmaker

from shared.archive.records import event_record, iter_records
from shared.archive.writer import EventNotFound, ExportReport, ProgressCallback
from shared.archive.zipstream import ZipStream
from shared.schedule import days as d
from shared.schedule.identity import record_guid
from shared.schedule.xmltext import xml_text

ROWS_PER_CHUNK = 500
SESSION_COLUMNS = ("id", "guid", "title", "subtitle", "state", "date", "start", "end", "duration", "room", "track",
                   "type", "language", "speakers", "speaker_ids", "short_abstract", "long_abstract", "slides",
                   "video", "audio", "signup_url", "event", "timezone")
SPEAKER_COLUMNS = ("id", "guid", "name", "email", "organisation", "position", "country", "city", "website",
                   "twitter", "github", "linkedin", "facebook", "short_biography", "long_biography", "session_ids")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A safe cell: text cleaned, formulas defused; numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = xml_text(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _name(value: Any) -> Any:
    return value.get("name") if isinstance(value, Mapping) else None


def session_row(ev: Mapping[str, Any], record: Mapping[str, Any], day_change: Any, tz: Any) -> list[Any]:
    start, end = d.parse_wall(record.get("start_time")), d.parse_wall(record.get("end_time"))
    speakers = [s for s in record.get("speakers") or [] if isinstance(s, Mapping)]
    local_start = d.localize(start, tz) if start else None
    local_end = d.localize(end, tz) if end else None
    values = {
        "id": record.get("id"), "guid": record_guid(ev, "session", record), "title": record.get("title"),
        "subtitle": record.get("subtitle"), "state": record.get("state"),
        "date": d.conference_date(start, day_change).isoformat() if start else "",
        "start": d.iso_local(local_start) if local_start else "", "end": d.iso_local(local_end) if local_end else "",
        "duration": d.format_duration(d.minutes_between(local_start, local_end)) if local_start and local_end else "",
        "room": _name(record.get("microlocation")), "track": _name(record.get("track")),
        "type": _name(record.get("session_type")), "language": record.get("language"),
        "speakers": "; ".join(str(s.get("name") or "") for s in speakers),
        "speaker_ids": " ".join(str(s.get("id")) for s in speakers),
        "short_abstract": record.get("short_abstract"), "long_abstract": record.get("long_abstract"),
        "slides": record.get("slides"), "video": record.get("video"), "audio": record.get("audio"),
        "signup_url": record.get("signup_url"),
        # The event on every row, so a CSV alone says whose sessions these are and in which zone (re-import).
        "event": ev.get("name"), "timezone": d.zone_name(tz),
    }
    return [cell(values[column]) for column in SESSION_COLUMNS]


def speaker_row(ev: Mapping[str, Any], record: Mapping[str, Any]) -> list[Any]:
    values = {column: record.get(column) for column in SPEAKER_COLUMNS}
    values["guid"] = record_guid(ev, "speaker", record)
    values["session_ids"] = " ".join(str(s.get("id")) for s in record.get("sessions") or [] if isinstance(s, Mapping))
    return [cell(values[column]) for column in SPEAKER_COLUMNS]


def _csv_text(rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def write_csv_zip(db: sessionmaker[Session], event_id: int, *, exported_at: datetime, report: ExportReport,
                  on_progress: ProgressCallback) -> Iterator[bytes]:
    with db() as session:
        try:
            ev = event_record(session, event_id)
        except LookupError as exc:
            raise EventNotFound(f"Event {event_id} does not exist (deleted after the export was requested?)") from exc
    tz, day_change = d.event_zone(ev), d.event_day_change(ev)
    zipper = ZipStream(date_time=exported_at.timetuple()[:6])
    files = (
        ("sessions", SESSION_COLUMNS, lambda rec: session_row(ev, rec, day_change, tz)),
        ("speakers", SPEAKER_COLUMNS, lambda rec: speaker_row(ev, rec)),
    )
    for name, columns, row in files:
        on_progress(name, 0, None)
        count = 0
        with db() as session, zipper.member(f"{name}.csv") as handle:
            handle.write(("\ufeff" + _csv_text([list(columns)])).encode("utf-8"))
            batch: list[list[Any]] = []
            for record in iter_records(session, event_id, name):
                batch.append(row(record))
                count += 1
                if len(batch) >= ROWS_PER_CHUNK:
                    handle.write(_csv_text(batch).encode("utf-8"))
                    batch = []
                    eventlet.sleep(0)
                    yield zipper.drain()
                    on_progress(name, count, None)
            handle.write(_csv_text(batch).encode("utf-8"))
        report.files[f"{name}.csv"] = {"count": count}
        on_progress(name, count, count)
        yield zipper.drain()
    yield zipper.close()
