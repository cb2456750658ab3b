"""What every schedule reader fills in: one event, its sessions, rooms, tracks, types and persons, plus warnings;
then turned into Open Event legacy records (``records()``) that the archive reader and loader take as they are.

Readers hand over what the file says, in the file's terms: session starts as aware datetimes when the file gives an
offset or zone, naive when it gives wall-clock times only (floating); durations in minutes. The builder decides the
event's time zone (the file's own name for it, else the one fixed offset its times carry, else UTC, with a warning)
and writes every time as the event's local wall time, as the model holds them.

Persons are deduplicated by their id in the file, else by name; a session id seen twice (merged files) is dropped
when it repeats the same session and renumbered otherwise; a GUID seen twice gets a derived one. Every record gets a
GUID in ``x-schedule.guid`` (the file's, or one derived from the event and the record's id in the file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from shared.archive.legacy import format_datetime
from shared.archive.safezip import ArchiveError, issue
from shared.schedule.identity import derived_guid, is_guid
from shared.schedule.readers.values import zone_for_offsets, zone_name

X = "x-schedule"
MAX_TITLE = 2000  # longer titles are cut (with a warning): no app shows more, and the column has a bound
YIELD_EVERY = 200  # sessions between two calls of ``pause``: the importer's hub must get turns (heartbeats)


@dataclass
class SessionDraft:
    """One talk as a reader found it. ``start`` aware (offset known) or naive (floating wall time)."""

    source_id: str | None
    title: str
    start: datetime | None = None
    minutes: int | None = None
    end: datetime | None = None
    room: str | None = None
    track: str | None = None
    type: str | None = None
    guid: str | None = None
    subtitle: str | None = None
    abstract: str | None = None
    description: str | None = None
    language: str | None = None
    persons: list[str] = field(default_factory=list)  # keys from ScheduleBuilder.person()
    x: dict[str, Any] = field(default_factory=dict)  # x-schedule keys (slug, links, recording, extra...)
    state: str | None = None  # the session state; "accepted" when the file does not say (a schedule lists talks)
    fields: dict[str, Any] = field(default_factory=dict)  # other legacy session keys (slides, video, signup_url)


class ScheduleBuilder:
    def __init__(self, source_format: str, max_records: int = 2_000_000,
                 pause: Callable[[float], None] | None = None) -> None:
        self.source_format = source_format
        self.max_records = max_records
        self.pause = pause or (lambda seconds: None)  # eventlet.sleep in the importer
        self.name: str | None = None
        self.timezone: str | None = None  # the file's zone name, when it has one
        self.start_date: date | None = None
        self.end_date: date | None = None
        self.event_fields: dict[str, Any] = {}  # legacy event keys (description, location_name, event_url...)
        self.event_x: dict[str, Any] = {}
        self.sessions: list[SessionDraft] = []
        self.rooms: dict[str, dict[str, Any]] = {}  # name -> x-schedule of the room
        self.tracks: dict[str, dict[str, Any]] = {}  # name -> {"color": ..., "x": {...}}
        self.types: dict[str, None] = {}
        self.persons: dict[str, dict[str, Any]] = {}  # key -> {"name", "fields", "x"}
        self._person_by_name: dict[str, str] = {}
        self._session_ids: dict[str, SessionDraft] = {}
        self._guids: set[str] = set()
        self.warnings: list[dict[str, Any]] = []
        self.warnings_total = 0

    # --------------------------------------------------------------------------------------------------- input

    def warn(self, code: str, detail: str, *, file: str | None = None, record_id: Any = None,
             field: str | None = None) -> None:
        self.warnings_total += 1
        self.warnings.append(issue(code, detail, file=file, record_id=record_id, field=field))

    def room(self, name: str | None, **x: Any) -> str | None:
        name = _clean_name(name)
        if not name:
            return None
        known = self.rooms.setdefault(name, {})
        for key, value in x.items():
            if value not in (None, "", [], {}):
                known.setdefault(key, value)
        return name

    def track(self, name: str | None, color: str | None = None, **x: Any) -> str | None:
        name = _clean_name(name)
        if not name:
            return None
        known = self.tracks.setdefault(name, {"color": None, "x": {}})
        if color and not known["color"]:
            known["color"] = color
        for key, value in x.items():
            if value not in (None, "", [], {}):
                known["x"].setdefault(key, value)
        return name

    def person(self, source_id: Any, name: str | None, fields: dict[str, Any] | None = None,
               x: dict[str, Any] | None = None) -> str | None:
        """The key of a person, merged with an earlier one of the same id (else the same name)."""
        name = _clean_name(name)
        sid = None if source_id in (None, "") else str(source_id)
        if not name and sid is None:
            return None
        key = f"id:{sid}" if sid is not None else self._person_by_name.get(name.casefold(), f"name:{name}")
        known = self.persons.get(key)
        if known is None:
            if len(self.persons) >= self.max_records:
                raise ArchiveError("too_many_records", f"more than {self.max_records} persons", file="speakers")
            known = self.persons[key] = {"name": name or f"Person {sid}", "fields": {}, "x": {}}
            if sid is not None:
                known["x"]["source_id"] = _id_value(source_id)
            if name:
                self._person_by_name.setdefault(name.casefold(), key)
        elif name and known["name"].startswith("Person ") and not known["name"] == name:
            known["name"] = name
        for key_, value in (fields or {}).items():
            if value not in (None, ""):
                known["fields"].setdefault(key_, value)
        for key_, value in (x or {}).items():
            if value not in (None, "", [], {}):
                known["x"].setdefault(key_, value)
        return key

    def add_session(self, draft: SessionDraft, where: str) -> None:
        """``where`` names the element for warnings (``<event id="12">``)."""
        if len(self.sessions) >= self.max_records:
            raise ArchiveError("too_many_records", f"more than {self.max_records} sessions", file="sessions")
        if len(self.sessions) % YIELD_EVERY == YIELD_EVERY - 1:
            self.pause(0)
        draft.title = (draft.title or "").strip()
        if not draft.title:
            draft.title = f"Session {draft.source_id}" if draft.source_id else "Untitled session"
            self.warn("missing_title", f"{where} has no title; named {draft.title!r}", file="sessions",
                      record_id=draft.source_id, field="title")
        if len(draft.title) > MAX_TITLE:
            self.warn("value_shortened", f"{where}: the title is {len(draft.title)} characters; cut to {MAX_TITLE}",
                      file="sessions", record_id=draft.source_id, field="title")
            draft.title = draft.title[:MAX_TITLE]
        if draft.source_id is not None:
            earlier = self._session_ids.get(draft.source_id)
            if earlier is not None:
                if _same_session(earlier, draft):
                    self.warn("duplicate_session", f"{where} repeats an earlier session with the same id; the copy "
                              "is dropped", file="sessions", record_id=draft.source_id, field="id")
                    return
                self.warn("id_reassigned", f"{where} has the id of an earlier, different session; both are kept "
                          "(the second under a new id)", file="sessions", record_id=draft.source_id, field="id")
                _own_extra(draft, self.source_format)["duplicate_id"] = True
            else:
                self._session_ids[draft.source_id] = draft
        if draft.guid is not None:
            if not is_guid(draft.guid):
                self.warn("invalid_guid", f"{where} has guid {draft.guid[:64]!r}, not a UUID; a derived one is used",
                          file="sessions", record_id=draft.source_id, field="guid")
                _own_extra(draft, self.source_format)["guid"] = draft.guid
                draft.guid = None
            elif draft.guid.lower() in self._guids:
                self.warn("duplicate_guid", f"{where} has the guid of an earlier session; it gets a derived one",
                          file="sessions", record_id=draft.source_id, field="guid")
                draft.guid = None
            else:
                draft.guid = draft.guid.lower()
                self._guids.add(draft.guid)
        self.sessions.append(draft)

    # --------------------------------------------------------------------------------------------------- times

    def _zone(self) -> tuple[str, tzinfo]:
        if self.timezone:
            name = zone_name(self.timezone)
            if name is not None:
                return name, ZoneInfo(name)
            self.warn("unknown_timezone", f"the file names the time zone {self.timezone[:64]!r}, which is not "
                      "known; times are read by their offsets", file="event", field="timezone")
        offsets = {s.start.utcoffset() for s in self.sessions if s.start is not None and s.start.tzinfo is not None}
        floating = any(s.start is not None and s.start.tzinfo is None for s in self.sessions)
        if offsets and (len(offsets) > 1 or _fixed_zone_name(next(iter(offsets))) is None):
            # Several offsets (a DST change) or a half-hour one: the zone that gives every time its offset.
            name = zone_for_offsets((s.start, s.start.utcoffset()) for s in self.sessions
                                    if s.start is not None and s.start.tzinfo is not None)
            if name is not None:
                self.warn("timezone_from_offset", f"the file names no time zone; its times carry the offsets of "
                          f"{name} (one zone that fits them all), so the event is in it", file="event",
                          field="timezone")
                return name, ZoneInfo(name)
        if len(offsets) == 1:
            (offset,) = offsets
            name = _fixed_zone_name(offset)
            if name is not None:
                if offset:
                    self.warn("timezone_from_offset", f"the file names no time zone; every time carries "
                              f"{_offset_text(offset)}, so the event is in {name}", file="event", field="timezone")
                return name, ZoneInfo(name)
        if len(offsets) > 1:
            self.warn("timezone_assumed", "the file names no time zone and its times carry several offsets; "
                      "the event is in UTC (every time converted)", file="event", field="timezone")
        elif floating and not offsets:
            self.warn("timezone_assumed", "the file names no time zone and its times carry none (floating); they "
                      "are kept as wall-clock times of an event in UTC", file="event", field="timezone")
        return "UTC", UTC

    def _local(self, value: datetime, tz: tzinfo) -> datetime:
        if value.tzinfo is None:
            return value
        return value.astimezone(tz).replace(tzinfo=None)

    # -------------------------------------------------------------------------------------------------- output

    def records(self) -> dict[str, Any]:
        """``{"event": {...}, "sessions": [...], "speakers": [...], "microlocations": [...], "tracks": [...],
        "session_types": [...]}`` in the legacy shape."""
        zone_name, tz = self._zone()
        # Derived GUIDs hang on the file's conference (its acronym, else its title), not on our future event id.
        event_key = {"identifier": self.event_x.get("acronym") or self.name or "schedule"}
        event_x = {k: v for k, v in self.event_x.items() if v not in (None, "", [], {})}
        event_x["source_format"] = self.source_format
        event_x.setdefault("guid", derived_guid(event_key, "event", event_key["identifier"]))

        for draft in self.sessions:
            self.room(draft.room)
            self.track(draft.track)
            if draft.type:
                self.types.setdefault(draft.type.strip(), None)
        rooms = {name: i for i, name in enumerate(self.rooms, 1)}
        tracks = {name: i for i, name in enumerate(self.tracks, 1)}
        types = {name: i for i, name in enumerate(self.types, 1)}
        person_ids = {key: i for i, key in enumerate(self.persons, 1)}

        sessions: list[dict[str, Any]] = []
        speaker_sessions: dict[str, list[dict[str, Any]]] = {key: [] for key in self.persons}
        track_sessions: dict[str, list[dict[str, Any]]] = {name: [] for name in self.tracks}
        starts: list[datetime] = []
        ends: list[datetime] = []
        durations: dict[str, list[int]] = {}
        for n, draft in enumerate(self.sessions, 1):
            if n % YIELD_EVERY == 0:
                self.pause(0)
            start = self._local(draft.start, tz) if draft.start is not None else None
            end = self._local(draft.end, tz) if draft.end is not None else None
            if start is not None and end is None and draft.minutes is not None:
                if draft.start.tzinfo is not None:  # elapsed time: a talk across a DST change ends an hour off
                    end = self._local(draft.start.astimezone(UTC) + timedelta(minutes=draft.minutes), tz)
                else:
                    end = start + timedelta(minutes=draft.minutes)
            if start is not None and end is not None and end < start:
                self.warn("end_before_start", f"session {draft.source_id or n} ends before it starts; it is given "
                          "no duration", file="sessions", record_id=draft.source_id, field="end_time")
                end = start
            if start is not None:
                starts.append(start)
                ends.append(end or start)
            if draft.type and start is not None and end is not None:
                durations.setdefault(draft.type.strip(), []).append(int((end - start).total_seconds() // 60))
            x = {k: v for k, v in draft.x.items() if v not in (None, "", [], {})}
            if draft.source_id is not None:
                x["source_id"] = _id_value(draft.source_id)
            x["guid"] = draft.guid or derived_guid(event_key, "session", draft.source_id or f"#{n}")
            self._guids.add(x["guid"])
            room = _clean_name(draft.room)
            track = _clean_name(draft.track)
            speakers = []
            for key in dict.fromkeys(draft.persons):
                if key in person_ids:
                    speakers.append({"id": person_ids[key], "name": self.persons[key]["name"],
                                     "organisation": self.persons[key]["fields"].get("organisation")})
                    speaker_sessions[key].append({"id": n, "title": draft.title})
            record = {
                "id": n,
                "title": draft.title,
                "subtitle": draft.subtitle or None,
                "short_abstract": draft.abstract or "",
                "long_abstract": draft.description or "",
                "start_time": format_datetime(start),
                "end_time": format_datetime(end),
                "session_type": {"id": types[draft.type.strip()], "name": draft.type.strip()} if draft.type else None,
                "track": {"id": tracks[track], "name": track} if track else None,
                "comments": "",
                "language": draft.language or None,
                "slides": draft.fields.get("slides"),
                "audio": draft.fields.get("audio"),
                "video": draft.fields.get("video"),
                "microlocation": {"id": rooms[room], "name": room} if room else None,
                "speakers": speakers,
                "state": draft.state or "accepted",
                **{k: v for k, v in draft.fields.items() if k not in ("slides", "audio", "video") and v},
                X: x,
            }
            if track:
                track_sessions[track].append({"id": n, "title": draft.title})
            sessions.append(record)

        speakers_out = []
        for key, person in self.persons.items():
            fields_ = {k: v for k, v in person["fields"].items() if v not in (None, "")}
            x = dict(person["x"])
            x.setdefault("guid", derived_guid(event_key, "speaker", x.get("source_id", person["name"])))
            speakers_out.append({
                "id": person_ids[key],
                "name": person["name"],
                "email": fields_.pop("email", None),
                "photo": fields_.pop("photo", None),
                "organisation": fields_.pop("organisation", None),
                "short_biography": fields_.pop("short_biography", None) or "",
                "long_biography": fields_.pop("long_biography", None) or "",
                "website": fields_.pop("website", None),
                "twitter": fields_.pop("twitter", None),
                "sessions": speaker_sessions[key],
                **fields_,
                X: x,
            })
        rooms_out = []
        for name, room_x in self.rooms.items():
            x = dict(room_x)
            x.setdefault("guid", derived_guid(event_key, "microlocation", name))
            rooms_out.append({"id": rooms[name], "name": name, "floor": None, X: x})
        tracks_out = []
        for name, track in self.tracks.items():
            x = dict(track["x"])
            x.setdefault("guid", derived_guid(event_key, "track", name))
            tracks_out.append({"id": tracks[name], "name": name, "color": track["color"],
                               "sessions": track_sessions[name], X: x})
        types_out = []
        for name, type_id in types.items():
            minutes = durations.get(name)
            length = _hhmm(max(set(minutes), key=minutes.count)) if minutes else None
            types_out.append({"id": type_id, "name": name, "length": length})

        first_day = datetime.combine(self.start_date, datetime.min.time()) if self.start_date else None
        last_day = datetime.combine(self.end_date, datetime.max.time().replace(microsecond=0)) \
            if self.end_date else None
        event_start = min(starts) if starts else first_day
        event_end = max(ends) if ends else last_day
        if event_start is None:
            event_start = datetime.combine(date.today(), datetime.min.time())
            self.warn("no_dates", "the file holds no dates; the event is dated today", file="event",
                      field="start_time")
        event = {
            "id": 1,
            "name": (self.name or "").strip() or "Imported schedule",
            "start_time": format_datetime(event_start),
            "end_time": format_datetime(event_end or event_start),
            "timezone": zone_name,
            **{k: v for k, v in self.event_fields.items() if v not in (None, "")},
            X: event_x,
        }
        if not (self.name or "").strip():
            self.warn("missing_title", "the file names no event; it is called 'Imported schedule'", file="event",
                      field="name")
        return {"event": event, "sessions": sessions, "speakers": speakers_out, "microlocations": rooms_out,
                "tracks": tracks_out, "session_types": types_out}


# ------------------------------------------------------------------------------------------------------- helpers

_SPACE = re.compile(r"\s+")


def _clean_name(name: Any) -> str:
    return _SPACE.sub(" ", name).strip() if isinstance(name, str) else ""


def _id_value(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    return int(text) if text.isdigit() and len(text) < 16 else text


def _own_extra(draft: SessionDraft, source_format: str) -> dict[str, Any]:
    extra = draft.x.get("extra")
    if not isinstance(extra, dict):
        extra = draft.x["extra"] = {}
    return extra.setdefault(source_format, {})


def _same_session(a: SessionDraft, b: SessionDraft) -> bool:
    if a.guid and b.guid and a.guid.lower() == b.guid.lower() and (a.title, a.start) == (b.title, b.start):
        return True  # same id, GUID, title and time: the same talk, whatever a merge did to its room
    return (a.title, a.start, a.minutes, a.end, _clean_name(a.room)) == (b.title, b.start, b.minutes, b.end,
                                                                         _clean_name(b.room))


def _fixed_zone_name(offset: timedelta | None) -> str | None:
    """``Etc/GMT-2`` for +02:00 (POSIX signs are inverted); None for offsets that are not whole hours."""
    if offset is None:
        return None
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return "UTC"
    if seconds % 3600 or abs(seconds) > 14 * 3600:
        return None
    hours = seconds // 3600
    return f"Etc/GMT{-hours:+d}"


def _offset_text(offset: timedelta) -> str:
    text = datetime(2000, 1, 1, tzinfo=timezone(offset)).strftime("%z")
    return f"{text[:3]}:{text[3:5]}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
