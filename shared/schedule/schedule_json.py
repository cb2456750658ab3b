"""C3VOC ``schedule.json`` (``schema.json``, version 1): the same tree as schedule.xml, as JSON.

Written event by event (never one huge ``json.dumps``), in the key order frab uses. Persons are written as the
schema's pretalx-style person (``name``, ``guid``, ``id``): its ``oneOf`` refuses a person that is both frab-style
(``public_name``) and pretalx-style.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from shared.schedule.days import iso_local
from shared.schedule.frab_xml import GENERATOR
from shared.schedule.snapshot import Link, Schedule, Talk

SCHEMA_URL = "https://c3voc.de/schedule/schema.json"
ZONE_NAME_RE = re.compile(r"^([A-Z][a-z]+/[A-Z][a-z]+)|UTC$")  # the schema's own pattern, searched as JSON Schema does
_LINK_TYPES = {"Slides": "slides", "Video": "media", "Audio": "media"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _reference(link: Link) -> dict[str, Any]:
    ref: dict[str, Any] = {"url": link.url, "title": link.title}
    if link.title in _LINK_TYPES:
        ref["type"] = _LINK_TYPES[link.title]
    return ref


def event(talk: Talk) -> dict[str, Any]:
    item: dict[str, Any] = {
        "guid": talk.guid,
        "id": talk.id,
        "logo": talk.logo,
        "date": iso_local(talk.start),
        "start": talk.start.strftime("%H:%M"),
        "end": iso_local(talk.end),
        "duration": talk.duration,
        "room": talk.room.name,
        "slug": talk.slug,
        "url": talk.url or f"urn:uuid:{talk.guid}",  # required; a URI even without any web address
        "title": talk.title,
        "subtitle": talk.subtitle,
        "track": talk.track,
        "type": talk.type,
        "language": talk.language,
        "abstract": talk.abstract,
        "description": talk.description,
        "recording_license": talk.recording_license,
        "do_not_record": talk.do_not_record,
        "persons": [{"guid": p.guid, "id": p.id, "name": p.name} for p in talk.persons],
        "links": [_reference(link) for link in talk.links],
        "attachments": [_reference(link) for link in talk.attachments],
    }
    if talk.feedback_url:
        item["feedback_url"] = talk.feedback_url
    return item


def conference_head(schedule: Schedule) -> dict[str, Any]:
    head: dict[str, Any] = {
        "acronym": schedule.acronym.replace("-", "_"),  # the JSON pattern has no hyphen after the first character
        "title": schedule.title,
        "start": schedule.start_date.isoformat() if schedule.start_date else "",
        "end": schedule.end_date.isoformat() if schedule.end_date else "",
        "daysCount": len(schedule.days),
        "timeslot_duration": schedule.timeslot,
    }
    if ZONE_NAME_RE.search(schedule.zone_name):
        head["time_zone_name"] = schedule.zone_name
    if schedule.url:
        head["url"] = schedule.url
    if schedule.logo:
        head["logo"] = schedule.logo
    head["tracks"] = [{"name": t.name, "slug": t.slug, **({"color": t.color} if t.color else {})}
                      for t in schedule.tracks]
    head["rooms"] = [{"name": room.name, "slug": room.slug, "guid": room.guid} for room in schedule.rooms]
    return head


def render(schedule: Schedule) -> Iterator[str]:
    head = conference_head(schedule)
    yield f'{{"$schema": {_dumps(SCHEMA_URL)}, "generator": {_dumps(GENERATOR)}, '
    yield f'"schedule": {{"version": {_dumps(schedule.version)}, "conference": '
    yield _dumps(head)[:-1] + ', "days": ['
    for n, day in enumerate(schedule.days):
        yield ", " if n else ""
        yield (f'{{"index": {day.index}, "date": "{day.date.isoformat()}", "day_start": "{iso_local(day.start)}", '
               f'"day_end": "{iso_local(day.end)}", "rooms": {{')
        # Keyed by room name: two rooms of one name share a key, so their talks are written together.
        by_name: dict[str, list[Talk]] = {}
        for room, talks in day.by_room(schedule.rooms):
            by_name.setdefault(room.name, []).extend(talks)
        for m, (name, talks) in enumerate(by_name.items()):
            yield f'{", " if m else ""}{_dumps(name)}: ['
            yield ", ".join(_dumps(event(talk)) for talk in sorted(talks, key=lambda t: (t.start, t.id)))
            yield "]"
        yield "}}"
    yield "]}}}\n"
