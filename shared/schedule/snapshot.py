"""An event's public schedule, read once from the database and shaped the way every schedule format needs it.

Built from the archive records (``shared.archive.records``), so what an import kept in ``x-schedule`` comes back.
Only sessions that are on the schedule are in it: sessions with a start time whose state is not one of a proposal
that was never accepted (``EXCLUDED_STATES``). Text is cleaned of what XML 1.0 forbids here, once, so every format
carries the same text. Ids and GUIDs are unique within the schedule (apps drop duplicates silently): a duplicate
imported GUID or slug gives way to a derived one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

import eventlet
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession

from shared.archive.records import event_record, iter_records
from shared.schedule import days as d
from shared.schedule.identity import (
    acronym,
    derived_guid,
    record_guid,
    session_slug,
    track_slug,
    x_schedule,
)
from shared.schedule.xmltext import xml_text

EXCLUDED_STATES = frozenset({"rejected", "pending", "draft", "withdrawn", "canceled", "cancelled", "deleted",
                             "submitted"})
DEFAULT_TIMESLOT = "00:15"
YIELD_EVERY = 500
MAX_SPAN_DAYS = 366  # an event record's own span is only used when sane (imports carry odd years)
_URL_RE = re.compile(r"^https?://[^\s\x00-\x1f\x7f<>\"{}|\\^`]+$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
_UNASSIGNED_ROOM = "Unassigned"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def text(value: Any) -> str:
    return xml_text(value)


def http_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL without spaces or controls (schemas demand one), else ``None``."""
    if isinstance(value, str):
        value = value.strip()
        if _URL_RE.match(value):
            return value
    return None


@dataclass
class Person:
    id: int
    guid: str
    name: str
    record: dict[str, Any]


@dataclass
class Room:
    id: int | None
    guid: str
    name: str
    slug: str


@dataclass
class Track:
    id: int
    name: str
    color: str | None
    slug: str


@dataclass
class Link:
    url: str
    title: str


@dataclass
class Talk:
    id: int
    guid: str
    slug: str
    title: str
    subtitle: str
    abstract: str
    description: str
    start: datetime  # aware, event zone
    end: datetime
    minutes: int
    room: Room
    track: str
    type: str
    language: str
    persons: list[Person]
    links: list[Link]
    attachments: list[Link]
    recording_license: str
    do_not_record: bool
    url: str
    feedback_url: str | None
    logo: str | None
    record: dict[str, Any]

    @property
    def duration(self) -> str:
        return d.format_duration(self.minutes)


@dataclass
class Day:
    index: int
    date: date
    start: datetime
    end: datetime
    talks: list[Talk] = field(default_factory=list)

    def by_room(self, rooms: Iterable[Room]) -> list[tuple[Room, list[Talk]]]:
        """Every room of the schedule (frab lists them all each day) with this day's talks there, by start."""
        groups: dict[str, list[Talk]] = {room.guid: [] for room in rooms}
        for talk in self.talks:
            groups[talk.room.guid].append(talk)
        return [(room, groups[room.guid]) for room in rooms]


@dataclass
class Schedule:
    event: dict[str, Any]
    event_id: int
    tz: tzinfo
    day_change: time
    title: str
    acronym: str
    version: str
    url: str | None
    logo: str | None
    timeslot: str
    days: list[Day]
    rooms: list[Room]
    tracks: list[Track]
    talks: list[Talk]
    skipped: int  # sessions left out (not scheduled or not accepted)
    generated_at: datetime  # aware; DTSTAMP of calendars (the export's request time, a feed's change time)

    @property
    def zone_name(self) -> str:
        return d.zone_name(self.tz)

    @property
    def start_date(self) -> date | None:
        return self.days[0].date if self.days else None

    @property
    def end_date(self) -> date | None:
        return self.days[-1].date if self.days else None


# ------------------------------------------------------------------------------------------------------ building


def _unique_ids(records: list[dict[str, Any]]) -> dict[int, int]:
    """Record id -> id to write: the imported ``source_id`` when every record has a distinct positive integer one
    (a round trip keeps the source's ids), else the database ids."""
    source = []
    for record in records:
        value = x_schedule(record).get("source_id")
        try:
            number = int(value)
        except (TypeError, ValueError):
            break
        if number < 1 or str(number) != str(value).strip():
            break
        source.append(number)
    else:
        if len(set(source)) == len(records):
            return {record["id"]: number for record, number in zip(records, source, strict=True)}
    return {record["id"]: record["id"] for record in records}


class _Unique:
    """Hands out values once: a value already taken is replaced by the fallback."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, value: str, fallback: str) -> str:
        if value in self.taken:
            value = fallback
        self.taken.add(value)
        return value


def _links(record: Mapping[str, Any], key: str) -> list[Link]:
    found: list[Link] = []
    for item in x_schedule(record).get(key) or []:
        if isinstance(item, Mapping) and http_url(item.get("url")):
            found.append(Link(http_url(item.get("url")) or "", text(item.get("title"))))
    return found


def _session_links(record: Mapping[str, Any]) -> list[Link]:
    links = _links(record, "links")
    seen = {link.url for link in links}
    for key, title in (("slides", "Slides"), ("video", "Video"), ("audio", "Audio")):
        url = http_url(record.get(key))
        if url and url not in seen:
            links.append(Link(url, title))
            seen.add(url)
    return links


def _recording(record: Mapping[str, Any]) -> tuple[str, bool]:
    extra = x_schedule(record)
    recording = extra.get("recording") if isinstance(extra.get("recording"), Mapping) else {}
    optout = recording.get("optout")
    if not isinstance(optout, bool):
        optout = extra.get("do_not_record") is True
    return text(recording.get("license")), optout


def _nested_name(value: Any) -> str:
    return text(value.get("name")) if isinstance(value, Mapping) else ""


def _version(ev: Mapping[str, Any], talks: list[Talk]) -> str:
    own = x_schedule(ev).get("version")
    if isinstance(own, str) and own.strip():
        return text(own)
    digest = hashlib.sha256()
    for talk in talks:
        digest.update(f"{talk.guid}|{talk.start.isoformat()}|{talk.minutes}|{talk.room.name}|{talk.title}\n".encode(
            "utf-8", "surrogatepass"))
    return f"1.0-{digest.hexdigest()[:10]}"


def _span(ev: Mapping[str, Any], talk_dates: list[date], day_change: time) -> tuple[date, date] | None:
    dates = list(talk_dates)
    start, end = d.parse_wall(ev.get("start_time")), d.parse_wall(ev.get("end_time"))
    if start and end and start <= end:
        own = (d.conference_date(start, day_change), d.conference_date(end, day_change))
        sessions = d.date_span(dates)
        if (own[1] - own[0]).days <= MAX_SPAN_DAYS and (
                sessions is None or (max(own[1], sessions[1]) - min(own[0], sessions[0])).days <= MAX_SPAN_DAYS):
            dates += list(own)
    return d.date_span(dates)


def load_schedule(db: OrmSession | Connection, event_id: int, *, root_url: str = "",
                  generated_at: datetime | None = None) -> Schedule:
    """The event's schedule. Raises ``LookupError`` when the event does not exist.

    ``root_url``: base of session URLs when the event has no web site; ``generated_at``: when this rendering is
    from (fixed, not the clock, so the same data gives the same bytes)."""
    ev = event_record(db, event_id)
    tz, day_change = d.event_zone(ev), d.event_day_change(ev)
    ev_url = http_url(ev.get("event_url"))
    base_url = ev_url or http_url(root_url)

    speakers = list(iter_records(db, event_id, "speakers"))
    speaker_ids = _unique_ids(speakers)
    persons: dict[int, Person] = {}
    person_guids = _Unique()
    for sp in speakers:
        fallback = derived_guid(ev, "speaker", sp["id"])
        guid = person_guids.take(record_guid(ev, "speaker", sp), fallback)
        persons[sp["id"]] = Person(speaker_ids[sp["id"]], guid, text(sp.get("name")), sp)

    rooms: dict[int | None, Room] = {}
    room_guids = _Unique()
    for mic in iter_records(db, event_id, "microlocations"):
        guid = room_guids.take(record_guid(ev, "microlocation", mic), derived_guid(ev, "microlocation", mic["id"]))
        rooms[mic["id"]] = Room(mic["id"], guid, text(mic.get("name")) or f"Room {mic['id']}",
                                track_slug({"id": mic["id"], "name": mic.get("name"), "x-schedule": {}}))

    tracks: list[Track] = []
    track_slugs = _Unique()
    for tr in iter_records(db, event_id, "tracks"):
        color = tr.get("color") if isinstance(tr.get("color"), str) and _COLOR_RE.match(tr["color"]) else None
        slug = track_slugs.take(track_slug(tr), f"track-{tr['id']}")
        tracks.append(Track(tr["id"], text(tr.get("name")), color.lower() if color else None, slug))

    records, skipped = [], 0
    for record in iter_records(db, event_id, "sessions"):
        state = str(record.get("state") or "").strip().lower()
        if d.parse_wall(record.get("start_time")) is None or state in EXCLUDED_STATES:
            skipped += 1
            continue
        records.append(record)
    session_ids = _unique_ids(records)
    talk_guids, slugs = _Unique(), _Unique()
    talks: list[Talk] = []
    for n, record in enumerate(records):
        if n % YIELD_EVERY == 0:
            eventlet.sleep(0)  # pure Python for every session: let heartbeats and other requests run
        extra = x_schedule(record)
        start = d.localize(d.parse_wall(record["start_time"]), tz)  # type: ignore[arg-type]
        end_wall = d.parse_wall(record.get("end_time"))
        end = d.localize(end_wall, tz) if end_wall else start
        minutes = d.minutes_between(start, end)
        micro = record.get("microlocation")
        micro_id = micro.get("id") if isinstance(micro, Mapping) else None
        room = rooms.get(micro_id)
        if room is None:
            room = rooms.setdefault(None, Room(None, derived_guid(ev, "microlocation", "none"), _UNASSIGNED_ROOM,
                                               "unassigned"))
        written_id = session_ids[record["id"]]
        guid = talk_guids.take(record_guid(ev, "session", record), derived_guid(ev, "session", record["id"]))
        own_slug = session_slug(ev, record)
        slug = slugs.take(own_slug, session_slug(ev, {"id": written_id, "title": record.get("title")}))
        license_, optout = _recording(record)
        talk_persons = [persons[s["id"]] for s in record.get("speakers") or []
                        if isinstance(s, Mapping) and s.get("id") in persons]
        talks.append(Talk(
            id=written_id, guid=guid, slug=slug, title=text(record.get("title")),
            subtitle=text(record.get("subtitle") or extra.get("subtitle")),
            abstract=text(record.get("short_abstract")), description=text(record.get("long_abstract")),
            start=start, end=end if end >= start else start, minutes=minutes, room=room,
            track=_nested_name(record.get("track")), type=_nested_name(record.get("session_type")),
            language=text(record.get("language") or extra.get("language")), persons=talk_persons,
            links=_session_links(record), attachments=_links(record, "attachments"), recording_license=license_,
            do_not_record=optout,
            url=http_url(extra.get("url")) or (f"{base_url.rstrip('/')}/#session-{written_id}" if base_url else ""),
            feedback_url=http_url(extra.get("feedback_url")), logo=http_url(extra.get("logo")), record=record))
    talks.sort(key=lambda t: (t.start, t.room.name, t.id))

    by_date: dict[date, list[Talk]] = {}
    for talk in talks:
        by_date.setdefault(d.conference_date(talk.start.replace(tzinfo=None), day_change), []).append(talk)
    span = _span(ev, list(by_date), day_change)
    if span and (span[1] - span[0]).days > MAX_SPAN_DAYS:
        dates = sorted(by_date)  # sessions scattered over years: only the days that have some
    elif span:
        dates = [c.date for c in d.conference_days(span[0], span[1], tz, day_change)]
    else:
        # Nothing dated at all: one empty day (schedule.xml needs a day), on a fixed date so exports stay equal.
        dates = [date(1970, 1, 1)]
    schedule_days = []
    for index, day in enumerate(dates, start=1):
        start, end = d.day_bounds(day, tz, day_change)
        day_talks = by_date.get(day, [])
        if day_talks:
            start = min(t.start for t in day_talks)
            end = max(t.end for t in day_talks)
        schedule_days.append(Day(index, day, start, end, day_talks))

    room_list = [room for key, room in rooms.items() if key is not None]
    if None in rooms:
        room_list.append(rooms[None])
    return Schedule(
        event=ev, event_id=event_id, tz=tz, day_change=day_change, title=text(ev.get("name")), acronym=acronym(ev),
        version=_version(ev, talks), url=ev_url, logo=http_url(ev.get("logo")),
        timeslot=_timeslot(ev), days=schedule_days, rooms=room_list, tracks=tracks, talks=talks, skipped=skipped,
        generated_at=generated_at or EPOCH)


def _timeslot(ev: Mapping[str, Any]) -> str:
    own = x_schedule(ev).get("timeslot_duration")
    try:
        return d.format_duration(d.parse_duration(own)) if isinstance(own, str) else DEFAULT_TIMESLOT
    except d.BadTime:
        return DEFAULT_TIMESLOT


__all__ = ["EXCLUDED_STATES", "Day", "Link", "Person", "Room", "Schedule", "Talk", "Track", "http_url",
           "load_schedule", "text"]
