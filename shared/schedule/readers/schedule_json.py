"""schedule.json: C3VOC v1 (frab, pretalx: ``conference.days[].rooms{name: [events]}``) and schedule 2.0 (hub:
``schedule.events`` and ``schedule.persons`` beside the conference).

Times: an event's ``date`` (ISO with offset) is the truth; without it the day's date and ``start`` in the
conference's ``time_zone_name``. Persons are keyed by ``guid``, then ``id``/``code``, then name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.archive.safezip import ArchiveError
from shared.schedule.readers.builder import ScheduleBuilder, SessionDraft
from shared.schedule.readers.safety import ScheduleLimits, parse_json
from shared.schedule.readers.values import duration_minutes, parse_clock, parse_date, parse_datetime, zone_info

# Keys of an event the reader maps itself; any other one is kept verbatim under x-schedule.extra.
_KNOWN = frozenset({
    "id", "guid", "code", "date", "start", "end", "duration", "room", "slug", "title", "subtitle", "track", "type",
    "language", "abstract", "description", "persons", "participants", "links", "attachments", "recording_license",
    "do_not_record", "answers", "feedback_url", "url", "logo",
})


def read(data: bytes, limits: ScheduleLimits, source_format: str = "schedule-json",
         pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    schedule = ScheduleBuilder(source_format, limits.max_records, pause)
    document = parse_json(data, limits, "schedule.json")
    if isinstance(document, dict) and isinstance(document.get("talks"), list) and "schedule" not in document:
        _widget(schedule, document, source_format)
        return schedule
    if not isinstance(document, dict) or not isinstance(document.get("schedule"), dict):
        raise ArchiveError("wrong_format", "the JSON file has no \"schedule\" object: it is not a schedule.json")
    root = document["schedule"]
    conference = root.get("conference")
    if not isinstance(conference, dict):
        raise ArchiveError("wrong_format", "schedule.json has no \"conference\" object")
    if "version" not in root:
        schedule.warn("missing_element", "\"schedule\" has no \"version\" (the schema requires one); read without",
                      file="event", field="version")
    schedule.name = _str(conference.get("title"))
    schedule.event_x["acronym"] = _str(conference.get("acronym"))
    schedule.event_x["guid"] = _str(conference.get("guid")) or None
    zone_name = _str(conference.get("time_zone_name"))
    schedule.timezone = zone_name or None
    schedule.start_date = parse_date(_str(conference.get("start")))
    schedule.end_date = parse_date(_str(conference.get("end")))
    schedule.event_fields["event_url"] = _str(conference.get("url")) or _str(root.get("base_url")) or None
    schedule.event_x["version"] = _str(root.get("version")) or None
    schedule.event_x["timeslot_duration"] = _str(conference.get("timeslot_duration")) or None
    extra = {k: root[k] for k in ("base_url", "generator") if root.get(k) not in (None, "")}
    extra.update({k: conference[k] for k in ("daysCount", "logo", "colors") if conference.get(k) not in (None, "")})
    if extra:
        schedule.event_x["extra"] = {source_format: extra}
    zone = zone_info(zone_name)

    room_names: dict[str, str] = {}  # room guid -> name (schedule 2.0 events may name a room by guid only)
    for room in _list(conference.get("rooms")):
        if isinstance(room, dict) and _str(room.get("name")):
            schedule.room(room["name"], guid=_str(room.get("guid")) or None)
            if room.get("guid"):
                room_names[str(room["guid"])] = room["name"]
    track_names: dict[str, str] = {}
    for track in _list(conference.get("tracks")):
        if isinstance(track, dict) and _str(track.get("name")):
            colors = track.get("colors")
            color = track.get("color") or (colors.get("light") if isinstance(colors, dict) else None)
            schedule.track(track["name"], _str(color) or None, guid=_str(track.get("guid")) or None,
                           slug=_str(track.get("slug")) or None)
            if track.get("slug"):
                track_names[str(track["slug"])] = track["name"]
    people: dict[str, dict[str, Any]] = {}
    for person in _list(root.get("persons")):
        if isinstance(person, dict) and person.get("guid"):
            people[str(person["guid"])] = person

    days = _list(conference.get("days"))
    for day in days:
        if not isinstance(day, dict):
            continue
        day_date = parse_date(_str(day.get("date")))
        rooms = day.get("rooms")
        if not isinstance(rooms, dict):
            continue
        for room_name, events in rooms.items():
            schedule.room(room_name)
            for event in _list(events):
                if isinstance(event, dict):
                    _event(schedule, event, day_date, zone, room_name, source_format, people, room_names,
                           track_names)
                else:
                    schedule.warn("record_skipped", f"an entry of room {room_name[:60]!r} is not an object; skipped",
                                  file="sessions", field="rooms")
    for event in _list(root.get("events")):
        if isinstance(event, dict):
            _event(schedule, event, None, zone, None, source_format, people, room_names, track_names)
    return schedule


def _event(schedule: ScheduleBuilder, event: dict[str, Any], day_date: Any, zone: ZoneInfo | None,
           room_name: str | None, source_format: str, people: dict[str, dict[str, Any]],
           room_names: dict[str, str], track_names: dict[str, str]) -> None:
    source_id = event.get("id") if event.get("id") not in (None, "") else event.get("code")
    source_id = None if source_id is None else str(source_id)
    where = f"event {source_id!r}" if source_id else "an event"
    start = parse_datetime(_str(event.get("date"))) or parse_datetime(_str(event.get("start"))
                                                                       if "T" in _str(event.get("start")) else None)
    if start is None:
        clock = parse_clock(_str(event.get("start")))
        if clock is not None and day_date is not None:
            start = datetime.combine(day_date, clock)
            if zone is not None:
                start = start.replace(tzinfo=zone)
    if start is None:
        schedule.warn("invalid_value", f"{where} has no usable date or start; it is left unscheduled",
                      file="sessions", record_id=source_id, field="date")
    end = parse_datetime(_str(event.get("end"))) if "T" in _str(event.get("end")) else None
    minutes = duration_minutes(_str(event.get("duration")))
    if event.get("duration") not in (None, "") and minutes is None:
        schedule.warn("invalid_value", f"{where}: duration {_str(event.get('duration'))[:20]!r} is not HH:MM; "
                      "no end time", file="sessions", record_id=source_id, field="duration")
    if end is not None and start is not None and minutes is None:
        minutes = int((end - start) / timedelta(minutes=1))
    room = event.get("room")
    if isinstance(room, dict):
        room = room.get("name") or room_names.get(str(room.get("guid")))
    room = room_name or _str(room) or None
    track = event.get("track")
    if isinstance(track, dict):
        track = track.get("name") or track_names.get(str(track.get("slug")))
    persons = []
    for person in _list(event.get("persons")) + _list(event.get("participants")):
        key = _person(schedule, person, people)
        if key is not None:
            persons.append(key)
    x: dict[str, Any] = {
        "slug": _str(event.get("slug")) or None,
        "links": [_link(link) for link in _list(event.get("links")) if _link(link)],
        "attachments": [_link(a) for a in _list(event.get("attachments")) if _link(a)],
        "feedback_url": _str(event.get("feedback_url")) or None,
        "answers": event.get("answers") or None,
        "url": _str(event.get("url")) or None,
        "logo": _str(event.get("logo")) or None,
    }
    if "recording_license" in event or "do_not_record" in event:
        x["recording"] = {"license": _str(event.get("recording_license")),
                          "optout": bool(event.get("do_not_record"))}
        if event.get("do_not_record"):
            x["do_not_record"] = True
    extra = {k: v for k, v in event.items() if k not in _KNOWN and v not in (None, "", [], {})}
    if event.get("id") not in (None, "") and event.get("code"):
        extra["code"] = event["code"]
    if extra:
        x["extra"] = {source_format: extra}
    schedule.add_session(SessionDraft(
        source_id=source_id, title=_str(event.get("title")), start=start, minutes=minutes, room=room,
        track=_str(track) or None, type=_str(event.get("type")) or None, guid=_str(event.get("guid")) or None,
        subtitle=_str(event.get("subtitle")) or None, abstract=_str(event.get("abstract")) or None,
        description=_str(event.get("description")) or None, language=_str(event.get("language")) or None,
        persons=persons, x=x,
    ), where)


def _widget(schedule: ScheduleBuilder, document: dict[str, Any], source_format: str) -> None:
    """pretalx's widget data: flat ``talks``, ``rooms``, ``tracks``, ``speakers`` joined by ids and speaker codes,
    names as strings or ``{language: text}``. Entries without a code are breaks, not talks: left out (pretalx's
    schedule.xml leaves them out too)."""
    schedule.timezone = _str(document.get("timezone")) or None
    schedule.start_date = parse_date(_str(document.get("event_start")))
    schedule.end_date = parse_date(_str(document.get("event_end")))
    schedule.name = _i18n(document.get("name")) or None
    schedule.event_x["version"] = _str(document.get("version")) or None
    rooms = {str(r.get("id")): _i18n(r.get("name")) for r in _list(document.get("rooms")) if isinstance(r, dict)}
    tracks = {}
    for track in _list(document.get("tracks")):
        if isinstance(track, dict) and _i18n(track.get("name")):
            tracks[str(track.get("id"))] = schedule.track(_i18n(track["name"]), _str(track.get("color")) or None)
    speakers = {}
    for speaker in _list(document.get("speakers")):
        if isinstance(speaker, dict) and speaker.get("code"):
            avatar = _str(speaker.get("avatar"))
            speakers[str(speaker["code"])] = schedule.person(speaker["code"], _str(speaker.get("name")), fields={
                "photo": avatar if avatar.startswith(("http://", "https://")) else None,
                "long_biography": _str(speaker.get("biography")) or None})
    breaks = 0
    for talk in _list(document.get("talks")):
        if not isinstance(talk, dict):
            continue
        if not talk.get("code"):
            breaks += 1
            continue
        code = str(talk["code"])
        where = f"talk {code!r}"
        start = parse_datetime(_str(talk.get("start")))
        end = parse_datetime(_str(talk.get("end")))
        if start is None:
            schedule.warn("invalid_value", f"{where} has no usable start; it is left unscheduled", file="sessions",
                          record_id=code, field="start")
        title = talk.get("title")
        translations = title if isinstance(title, dict) else None
        x: dict[str, Any] = {"extra": {source_format: {k: v for k, v in {
            "id": talk.get("id"), "titles": translations, "state": talk.get("state"),
            "updated": talk.get("updated")}.items() if v not in (None, "", {})}}}
        if talk.get("do_not_record"):
            x["do_not_record"] = True
        schedule.add_session(SessionDraft(
            source_id=code, title=_i18n(title), start=start, end=end,
            minutes=talk.get("duration") if end is None and isinstance(talk.get("duration"), int) else None,
            room=rooms.get(str(talk.get("room"))) or None, track=tracks.get(str(talk.get("track"))),
            abstract=_i18n(talk.get("abstract")) or None,
            persons=[speakers[c] for c in _list(talk.get("speakers")) if c in speakers and speakers[c]], x=x,
        ), where)
    if breaks:
        schedule.warn("record_skipped", f"{breaks} entries without a talk code (breaks) are not talks; left out",
                      file="sessions")


def _i18n(value: Any) -> str:
    """A pretalx text: a string, or ``{language: text}`` (English first, else the first language)."""
    if isinstance(value, dict):
        return _str(value.get("en")) or next((_str(v) for v in value.values() if _str(v)), "")
    return _str(value)


def _person(schedule: ScheduleBuilder, person: Any, people: dict[str, dict[str, Any]]) -> str | None:
    if isinstance(person, str):
        return schedule.person(None, person)
    if not isinstance(person, dict):
        return None
    guid = _str(person.get("guid")) or None
    full = {**people.get(guid or "", {}), **person}
    name = _str(full.get("public_name")) or _str(full.get("full_public_name")) or _str(full.get("name"))
    source_id = full.get("id") if full.get("id") not in (None, "") else full.get("code") or guid
    avatar = full.get("avatar")
    if isinstance(avatar, dict):
        avatar = avatar.get("url")
    photo = avatar if isinstance(avatar, str) and avatar.startswith(("http://", "https://")) else None
    biography = _str(full.get("biography"))
    x = {"guid": guid, "links": [_link(link) for link in _list(full.get("links")) if _link(link)],
         "answers": full.get("answers") or None}
    extra = {k: full[k] for k in ("code", "url", "role") if full.get(k) and not (k == "code" and
                                                                                  source_id == full.get(k))}
    if avatar and not photo:
        extra["avatar"] = avatar
    if extra:
        x["extra"] = {schedule.source_format: extra}
    return schedule.person(source_id, name, fields={"photo": photo, "long_biography": biography or None}, x=x)


def _link(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value:
        return {"url": value, "title": value}
    if isinstance(value, dict) and isinstance(value.get("url"), str) and value["url"]:
        return {k: v for k, v in value.items() if v not in (None, "")}
    return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()
