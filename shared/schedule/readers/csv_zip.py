"""CSV: a zip of ``sessions.csv`` and (optionally) ``speakers.csv``, as our export writes it; a lone sessions CSV too.

Lenient about columns: they are found by their header, in any order, with the usual spellings (``start``,
``start_time``, ``starts_at``...); unknown columns are kept per record under ``x-schedule.extra.csv``. A session's
speakers are named in a ``speakers`` column (separated by ``;`` or ``|``) or by ``speaker_ids``; times are ISO 8601,
with an offset or in the ``timezone`` column's zone. The zip goes through the same safe-zip checks as any archive.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.archive.safezip import ArchiveError, ArchiveLimits, open_source
from shared.schedule.readers.builder import ScheduleBuilder, SessionDraft
from shared.schedule.readers.safety import ScheduleLimits, check_size, decode_text
from shared.schedule.readers.values import duration_minutes, parse_date, parse_datetime, zone_info

SESSION_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "session_id"),
    "guid": ("guid", "uuid"),
    "title": ("title", "name", "session", "session_title"),
    "subtitle": ("subtitle",),
    "start": ("start", "start_time", "starts_at", "begin", "date"),
    "end": ("end", "end_time", "ends_at"),
    "duration": ("duration", "length"),
    "room": ("room", "microlocation", "location", "room_name"),
    "track": ("track", "track_name"),
    "type": ("type", "session_type", "format"),
    "language": ("language", "lang"),
    "abstract": ("abstract", "short_abstract", "summary"),
    "description": ("description", "long_abstract"),
    "speakers": ("speakers", "persons", "speaker_names", "speaker"),
    "speaker_ids": ("speaker_ids", "person_ids"),
    "slug": ("slug",),
    "state": ("state", "status"),
    "slides": ("slides", "slides_url"),
    "video": ("video", "video_url"),
    "audio": ("audio", "audio_url"),
    "signup_url": ("signup_url",),
    "timezone": ("timezone", "time_zone", "tz"),
    "event": ("event", "event_name", "conference"),
}
SPEAKER_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "speaker_id", "person_id"),
    "guid": ("guid", "uuid"),
    "name": ("name", "full_name", "public_name", "speaker"),
    "email": ("email", "e_mail", "mail"),
    "organisation": ("organisation", "organization", "affiliation", "company"),
    "biography": ("biography", "long_biography", "bio"),
    "short_biography": ("short_biography",),
    "website": ("website", "url", "homepage"),
    "twitter": ("twitter",),
    "photo": ("photo", "avatar", "photo_url", "image"),
    "position": ("position", "title_position"),
    "country": ("country",),
    "city": ("city",),
    "github": ("github",),
    "linkedin": ("linkedin",),
    "facebook": ("facebook",),
    "mobile": ("mobile", "phone"),
    "session_ids": ("session_ids", "sessions"),
}
_FORMULA_GUARD = re.compile(r"^'(?=[=+\-@\t\r])")  # our export defuses formulas with a leading apostrophe
_SPLIT = re.compile(r"\s*[;|]\s*")
_ID_SPLIT = re.compile(r"[\s;|,]+")


def read(path: Path, archive_limits: ArchiveLimits, limits: ScheduleLimits,
         pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    """``path``: a zip holding sessions.csv (and speakers.csv), or a CSV file of sessions."""
    schedule = ScheduleBuilder("csv", limits.max_records, pause)
    with path.open("rb") as stream:
        is_zip = stream.read(4) == b"PK\x03\x04"
    if not is_zip:
        data = path.read_bytes()
        check_size(data, limits, "CSV")
        _sessions(schedule, decode_text(data, "CSV"), {}, limits)
        return schedule
    source = open_source(path, archive_limits)
    try:
        members = {posixpath.basename(m).lower(): m for m in source.members}
        if "sessions.csv" not in members:
            raise ArchiveError("missing_file", "the CSV zip has no sessions.csv")
        speakers = {}
        if "speakers.csv" in members:
            speakers = _speakers(schedule, _member_text(source, members["speakers.csv"], limits), limits)
        else:
            schedule.warn("file_ignored", "the CSV zip has no speakers.csv; speakers come from the sessions' "
                          "speakers column only", file="speakers")
        _sessions(schedule, _member_text(source, members["sessions.csv"], limits), speakers, limits)
    finally:
        source.close()
    return schedule


def _member_text(source: Any, member: str, limits: ScheduleLimits) -> str:
    with source.open(member, label=posixpath.basename(member)) as stream:
        data = stream.read(limits.max_file_bytes + 1)
    check_size(data, limits, posixpath.basename(member))
    return decode_text(data, posixpath.basename(member))


def _rows(text: str, columns: dict[str, tuple[str, ...]], file: str, schedule: ScheduleBuilder,
          limits: ScheduleLimits) -> tuple[list[dict[str, str]], list[str]]:
    # The delimiter is the one the header line uses most: sniffing whole rows misreads long quoted multi-line cells.
    header_line = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count)
    csv.field_size_limit(limits.max_string_chars)
    try:
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
        header = next(reader, None)
    except csv.Error as exc:
        raise ArchiveError("bad_csv", f"{file}.csv cannot be read as CSV: {exc}", file=file) from None
    if header is None:
        return [], []
    names = [_norm(h) for h in header]
    mapping: dict[int, str] = {}
    for index, name in enumerate(names):  # a column named exactly wins over another column's alias
        if name in columns and name not in mapping.values():
            mapping[index] = name
    for index, name in enumerate(names):
        if index in mapping:
            continue
        for canonical, spellings in columns.items():
            if name in spellings and canonical not in mapping.values():
                mapping[index] = canonical
                break
    unknown = [header[i].strip() for i in range(len(header)) if i not in mapping and header[i].strip()]
    rows = []
    try:
        for n, row in enumerate(reader, 2):
            if len(rows) >= limits.max_records:
                raise ArchiveError("too_many_records", f"{file}.csv holds more than {limits.max_records} rows",
                                   file=file)
            if not any(cell.strip() for cell in row):
                continue
            record = {mapping[i]: _FORMULA_GUARD.sub("", cell.strip()) for i, cell in enumerate(row) if i in mapping}
            record["_line"] = str(n)
            for i, cell in enumerate(row):
                if i not in mapping and i < len(header) and header[i].strip() and cell.strip():
                    record.setdefault("_extra", {})[header[i].strip()] = cell  # type: ignore[index]
            rows.append(record)
    except csv.Error as exc:
        raise ArchiveError("bad_csv", f"{file}.csv cannot be read as CSV: {exc}", file=file) from None
    return rows, unknown


def _speakers(schedule: ScheduleBuilder, text: str, limits: ScheduleLimits) -> dict[str, str]:
    rows, _unknown = _rows(text, SPEAKER_COLUMNS, "speakers", schedule, limits)
    keys: dict[str, str] = {}
    for row in rows:
        if not row.get("name") and not row.get("id"):
            schedule.warn("record_skipped", f"line {row['_line']} names no speaker; skipped", file="speakers")
            continue
        photo = row.get("photo") if (row.get("photo") or "").startswith(("http://", "https://")) else None
        extra = dict(row.get("_extra") or {})  # type: ignore[call-overload]
        key = schedule.person(row.get("id") or None, row.get("name"), fields={
            "email": row.get("email") or None, "organisation": row.get("organisation") or None,
            "long_biography": row.get("biography") or None, "short_biography": row.get("short_biography") or None,
            "website": row.get("website") or None, "twitter": row.get("twitter") or None, "photo": photo,
            **{k: row.get(k) or None for k in ("position", "country", "city", "github", "linkedin", "facebook",
                                                 "mobile")}},
            x={"guid": row.get("guid") or None, "extra": {"csv": extra} if extra else None})
        if key is not None:
            if row.get("id"):
                keys[row["id"]] = key
            if row.get("name"):
                keys.setdefault(f"name:{row['name'].casefold()}", key)
    return keys


def _sessions(schedule: ScheduleBuilder, text: str, speakers: dict[str, str], limits: ScheduleLimits) -> None:
    rows, _unknown = _rows(text, SESSION_COLUMNS, "sessions", schedule, limits)
    zones = {row["timezone"] for row in rows if row.get("timezone")}
    if len(zones) == 1:
        schedule.timezone = zones.pop()
    elif len(zones) > 1:
        schedule.warn("timezone_conflict", f"the sessions name {len(zones)} time zones; the first one is the "
                      "event's", file="sessions", field="timezone")
        schedule.timezone = next(row["timezone"] for row in rows if row.get("timezone"))
    zone = zone_info(schedule.timezone)
    day_first = _spreadsheet_order(schedule, rows)
    names = {row["event"] for row in rows if row.get("event")}
    schedule.name = sorted(names)[0] if names else None
    for row in rows:
        where = f"sessions.csv line {row['_line']}"
        start = _time(row.get("start"), zone, day_first)
        end = _time(row.get("end"), zone, day_first)
        if row.get("start") and start is None:
            schedule.warn("invalid_value", f"{where}: start {row['start'][:40]!r} is not an ISO date-time; left "
                          "unscheduled", file="sessions", record_id=row.get("id"), field="start")
        persons = []
        for ref in _ID_SPLIT.split(row.get("speaker_ids") or ""):
            if ref and ref in speakers:
                persons.append(speakers[ref])
        if not persons:
            for name in _SPLIT.split(row.get("speakers") or ""):
                if name:
                    persons.append(speakers.get(f"name:{name.casefold()}") or schedule.person(None, name))
        extra = dict(row.get("_extra") or {})  # type: ignore[call-overload]
        x: dict[str, Any] = {"slug": row.get("slug") or None, "extra": {"csv": extra} if extra else None}
        media = {k: row[k] for k in ("slides", "video", "audio") if (row.get(k) or "").startswith(("http://",
                                                                                                  "https://"))}
        schedule.add_session(SessionDraft(
            source_id=row.get("id") or None, title=row.get("title") or "", start=start, end=end,
            minutes=duration_minutes(row.get("duration")) if end is None else None, room=row.get("room"),
            track=row.get("track") or None, type=row.get("type") or None, guid=row.get("guid") or None,
            subtitle=row.get("subtitle") or None, abstract=row.get("abstract") or None,
            description=row.get("description") or None, language=row.get("language") or None,
            persons=[p for p in persons if p], x=x, state=row.get("state") or None,
            fields={**media, "signup_url": row.get("signup_url") or None}), where)
    dates = [d for d in (parse_date(r.get("start")) for r in rows) if d is not None]
    dates += [s.start.date() for s in schedule.sessions if s.start is not None]
    if dates:
        schedule.start_date, schedule.end_date = min(dates), max(dates)


# Spreadsheets re-save ISO times in the locale's form: 15.06.2024 10:00 (day first), 6/15/2024 10:00 (US).
_DOTTED = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$")
_SLASHED = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?\s*$")


def _spreadsheet_order(schedule: ScheduleBuilder, rows: list[dict[str, str]]) -> bool:
    """Whether slashed dates are day first (some first part above 12), else month first (Excel's US form); a
    warning says how spreadsheet dates were read."""
    values = [row[k] for row in rows for k in ("start", "end") if row.get(k)]
    slashed = [m for m in (_SLASHED.match(v) for v in values) if m]
    dotted = any(_DOTTED.match(v) for v in values)
    day_first = any(int(m.group(1)) > 12 for m in slashed)
    if slashed:
        schedule.warn("spreadsheet_dates", "the sessions' times are written as a spreadsheet writes them (D/M/YYYY "
                      "or M/D/YYYY); read as " + ("day/month/year" if day_first else "month/day/year (US)"),
                      file="sessions", field="start")
    elif dotted:
        schedule.warn("spreadsheet_dates", "the sessions' times are written as DD.MM.YYYY HH:MM (a spreadsheet's "
                      "form); read as day.month.year in the event's zone", file="sessions", field="start")
    return day_first


def _spreadsheet_time(text: str, day_first: bool) -> datetime | None:
    match = _DOTTED.match(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _SLASHED.match(text)
        if match is None:
            return None
        first, second_part, year, hour, minute, second, half = match.groups()
        day, month = (first, second_part) if day_first else (second_part, first)
        if half and hour is not None:
            hour = str(int(hour) % 12 + (12 if half.lower() == "pm" else 0))
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None


def _time(text: str | None, zone: ZoneInfo | None, day_first: bool = False) -> datetime | None:
    value = parse_datetime((text or "").replace(" ", "T", 1) if text and "T" not in text else text)
    if value is None and text:
        value = _spreadsheet_time(text, day_first)
    if value is not None and value.tzinfo is None and zone is not None:
        value = value.replace(tzinfo=zone)
    return value


def _norm(header: str) -> str:
    return re.sub(r"[\s\-.]+", "_", header.strip().lstrip("\ufeff").lower())
