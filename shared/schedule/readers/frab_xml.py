"""The schedule.xml family: frab and pretalx (C3VOC XSD), wafer (DebConf), pentabarf style (FOSDEM, the Open Event
Server's Pentabarf export): ``<schedule><conference/><day><room><event/></room></day></schedule>``.

Read leniently, each departure from the XSD named in a warning: a missing ``<version>``, days without
``start``/``end``, events without ``guid`` (one is derived), ``<recording>`` without ``<license>``. A session's time is
its ``<date>`` (with offset) when there is one, else the day's date and ``<start>`` (a start before the conference's
day change belongs to the next calendar date, as frab lays days out), in the conference's ``time_zone_name`` when it
has one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from shared.archive.safezip import ArchiveError
from shared.schedule.readers.builder import ScheduleBuilder, SessionDraft
from shared.schedule.readers.safety import ScheduleLimits, parse_xml
from shared.schedule.readers.values import duration_minutes, parse_clock, parse_date, parse_datetime, zone_info

# Children of <event> the reader maps to the model or to x-schedule itself; any other one is kept verbatim.
_KNOWN = frozenset({
    "date", "start", "duration", "room", "slug", "url", "recording", "title", "subtitle", "track", "type", "language",
    "abstract", "description", "logo", "persons", "links", "attachments", "feedback_url", "video_download_url",
    "answers",
})


def read(data: bytes, limits: ScheduleLimits, source_format: str = "frab-xml",
         pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    schedule = ScheduleBuilder(source_format, limits.max_records, pause)
    root = parse_xml(data, limits, schedule.warn, "schedule XML")
    if _local(root.tag) != "schedule":
        raise ArchiveError("wrong_format", f"the XML root element is <{_local(root.tag)}>, not <schedule>")
    extra: dict[str, Any] = {}
    generator = root.find("generator")
    if generator is not None:
        extra["generator"] = {k: v for k, v in generator.attrib.items()}
    version = _text(root.find("version"))
    if root.find("version") is None:
        schedule.warn("missing_element", "<schedule> has no <version> (the XSD requires one); read without",
                      file="event", field="version")
    elif version:
        schedule.event_x["version"] = version
    conference = root.find("conference")
    day_change = time(0, 0)
    if conference is None:
        schedule.warn("missing_element", "<schedule> has no <conference>; the event is named after nothing",
                      file="event", field="conference")
    else:
        schedule.name = _text(conference.find("title"))
        schedule.event_x["acronym"] = _text(conference.find("acronym"))
        schedule.event_x["subtitle"] = _text(conference.find("subtitle"))
        schedule.event_x["guid"] = _text(conference.find("guid")) or None
        zone = _text(conference.find("time_zone_name"))
        if zone:
            schedule.timezone = zone
        schedule.start_date = parse_date(_text(conference.find("start")))
        schedule.end_date = parse_date(_text(conference.find("end")))
        change = _text(conference.find("day_change"))
        if change:
            parsed = parse_clock(change)
            if parsed is None:
                schedule.warn("invalid_value", f"<day_change> {change[:20]!r} is not a time; 00:00 is used",
                              file="event", field="day_change")
            else:
                day_change = parsed
                schedule.event_x["day_change"] = parsed.strftime("%H:%M")
        venue = _text(conference.find("venue"))
        city = _text(conference.find("city"))
        schedule.event_fields["location_name"] = ", ".join(p for p in (venue, city) if p) or None
        base_url = _text(conference.find("base_url")) or _text(conference.find("url"))
        schedule.event_fields["event_url"] = base_url or None
        for tag in ("days", "logo", "base_url"):
            value = _text(conference.find(tag))
            if value:
                extra[tag] = value
        schedule.event_x["timeslot_duration"] = _text(conference.find("timeslot_duration")) or None
        # The XSD (and pretalx) put <track name color slug/> straight in <conference>; older files wrap them.
        for track in [*conference.iterfind("track"), *conference.iterfind("tracks/track")]:
            schedule.track(_text(track) or track.get("name"), track.get("color"), slug=track.get("slug"))
    if extra:
        schedule.event_x["extra"] = {source_format: extra}
    zone = zone_info(schedule.timezone)
    missing_bounds = missing_guids = 0
    for day in root.iter("day"):
        day_date = parse_date(day.get("date"))
        if day.get("start") is None or day.get("end") is None:
            missing_bounds += 1
        if day_date is None:
            schedule.warn("invalid_value", f"<day index={day.get('index')!r}> has no valid date; its events are "
                          "read by their own <date>", file="sessions", field="day/date")
        for room in day.iter("room"):
            room_name = room.get("name")
            schedule.room(room_name, guid=room.get("guid"))
            for event in room.iter("event"):
                if not _read_event(schedule, event, day_date, day_change, zone, room_name, source_format):
                    missing_guids += 1
        loose = day.findall("event")  # hand-made files list events straight in <day>, naming the room inside
        for event in loose:
            if not _read_event(schedule, event, day_date, day_change, zone, None, source_format):
                missing_guids += 1
        if loose:
            schedule.warn("missing_element", f"<day date={day.get('date')!r}> holds {len(loose)} <event>(s) outside "
                          "any <room name>; each is put in the room its own <room> names", file="sessions",
                          field="day/event")
    if missing_bounds:
        schedule.warn("missing_attribute", f"{missing_bounds} <day> element(s) have no start/end attributes (the "
                      "XSD requires them); the days are taken from their events", file="event", field="day")
    if missing_guids:
        schedule.warn("missing_attribute", f"{missing_guids} <event> element(s) have no guid attribute (the XSD "
                      "requires one); each gets a GUID derived from the event and its id", file="sessions",
                      field="event/guid")
    return schedule


def _read_event(schedule: ScheduleBuilder, event: etree._Element, day_date: date | None, day_change: time,
                zone: ZoneInfo | None, room_name: str | None, source_format: str) -> bool:
    """Adds the event's session; False when it has no guid."""
    source_id = event.get("id")
    where = f"<event id={source_id!r}>" if source_id else "<event>"
    x: dict[str, Any] = {}
    start = parse_datetime(_text(event.find("date")))
    if start is None:
        clock = parse_clock(_text(event.find("start")))
        if clock is not None and day_date is not None:
            on = day_date + timedelta(days=1) if clock < day_change else day_date
            start = datetime.combine(on, clock)
            if zone is not None:
                start = start.replace(tzinfo=zone)
        elif event.find("date") is not None or event.find("start") is not None:
            schedule.warn("invalid_value", f"{where} has no usable <date> or <start>; it is left unscheduled",
                          file="sessions", record_id=source_id, field="date")
    duration_text = _text(event.find("duration"))
    minutes = duration_minutes(duration_text)
    if duration_text and minutes is None:
        schedule.warn("invalid_value", f"{where}: <duration> {duration_text[:20]!r} is not HH:MM; no end time",
                      file="sessions", record_id=source_id, field="duration")
    recording = event.find("recording")
    if recording is not None:
        rec: dict[str, Any] = {}
        license_ = recording.find("license")
        if license_ is None:
            schedule.warn("missing_element", f"{where}: <recording> has no <license> (the XSD requires one); kept "
                          "with an empty licence", file="sessions", record_id=source_id, field="recording/license")
        rec["license"] = _text(license_)
        optout = _text(recording.find("optout")).lower()
        rec["optout"] = optout == "true"
        x["recording"] = rec
        if rec["optout"]:
            x["do_not_record"] = True
    persons = []
    for person in event.iterfind("persons/person"):
        code = person.get("code")  # pretalx's speaker code
        key = schedule.person(person.get("id"), _text(person), x={
            "guid": person.get("guid"), "extra": {source_format: {"code": code}} if code else None})
        if key is not None:
            persons.append(key)
    links = [{"url": link.get("href"), "title": _text(link)} for link in event.iterfind("links/link")
             if link.get("href")]
    attachments = [{"url": a.get("href"), "title": _text(a)} for a in event.iterfind("attachments/attachment")
                   if a.get("href")]
    x["links"] = links
    x["attachments"] = attachments
    x["slug"] = _text(event.find("slug")) or None
    x["feedback_url"] = _text(event.find("feedback_url")) or None
    extra: dict[str, Any] = {}
    x["url"] = _text(event.find("url")) or None
    x["logo"] = _text(event.find("logo")) or None
    if _text(event.find("video_download_url")):
        extra["video_download_url"] = _text(event.find("video_download_url"))
    room_text = _text(event.find("room"))
    if room_text and room_name and _squash(room_text) != _squash(room_name):
        extra["room"] = room_text  # the element disagrees with its <room name>: the enclosing room wins
    for child in event:
        if isinstance(child.tag, str) and _local(child.tag) not in _KNOWN:
            extra.setdefault("elements", {})[_local(child.tag)] = _text(child)
    if extra:
        x["extra"] = {source_format: extra}
    schedule.add_session(SessionDraft(
        source_id=source_id,
        title=_text(event.find("title")),
        start=start,
        minutes=minutes,
        room=room_name or room_text,
        track=_text(event.find("track")) or None,
        type=_text(event.find("type")) or None,
        guid=event.get("guid") or None,
        subtitle=_text(event.find("subtitle")) or None,
        abstract=_text(event.find("abstract")) or None,
        description=_text(event.find("description")) or None,
        language=_text(event.find("language")) or None,
        persons=persons,
        x=x,
    ), where)
    return event.get("guid") is not None


_WS = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return "".join(element.itertext()).strip()


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""
