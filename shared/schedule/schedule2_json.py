"""C3VOC ``schedule.json`` 2.0 (``schema2.json``): a flat list of events beside the conference and its days.

Stricter than version 1 where our data is free text, so values are mapped: the session type to the schema's
``type`` enum (by keywords, else ``OTHER``), the language to an ISO 639-1 code (a code as it is, a few common
language names, else the event's default, ``en``), a session without a track to the track ``general``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from shared.schedule.calendar import duration_value
from shared.schedule.days import iso_local, parse_duration
from shared.schedule.frab_xml import GENERATOR
from shared.schedule.schedule_json import ZONE_NAME_RE
from shared.schedule.snapshot import Link, Schedule, Talk

SCHEMA_URL = "https://c3voc.de/schedule/schema2.json"
DEFAULT_LANGUAGE = "en"
GENERAL_TRACK = "general"
# First keyword found in the session type's name wins (the order matters: "lightning talk" before "talk").
_TYPES = (("lightning", "LIGHTNING_TALK"), ("workshop", "WORKSHOP"), ("hands-on", "HANDS-ON"),
          ("hands on", "HANDS-ON"), ("tutorial", "WORKSHOP"), ("meeting", "MEETING"), ("meetup", "MEETING"),
          ("discussion", "DISCUSSION"), ("panel", "DISCUSSION"), ("bof", "DISCUSSION"),
          ("performance", "PERFORMANCE"), ("concert", "CONCERT"), ("game", "GAME"), ("talk", "TALK"),
          ("keynote", "TALK"), ("lecture", "TALK"), ("presentation", "TALK"), ("session", "TALK"))
_LANGUAGES = {"english": "en", "german": "de", "deutsch": "de", "french": "fr", "français": "fr", "spanish": "es",
              "español": "es", "italian": "it", "dutch": "nl", "portuguese": "pt", "chinese": "zh", "japanese": "ja",
              "korean": "ko", "vietnamese": "vi", "indonesian": "id", "malay": "ms", "hindi": "hi", "russian": "ru",
              "albanian": "sq", "greek": "el", "polish": "pl", "czech": "cs", "swedish": "sv", "thai": "th"}
_LINK_TYPES = {"Slides": "SLIDES", "Video": "MEDIA", "Audio": "MEDIA"}


def event_type(name: str) -> str:
    lowered = name.lower()
    return next((kind for word, kind in _TYPES if word in lowered), "OTHER")


def language(value: str) -> str:
    lowered = value.strip().lower()
    if re.fullmatch(r"[a-z]{2}", lowered):
        return lowered
    if re.fullmatch(r"[a-z]{2}[-_][a-z]{2}", lowered):
        return lowered[:2]
    return _LANGUAGES.get(lowered, DEFAULT_LANGUAGE)


def _reference(link: Link) -> dict[str, Any]:
    ref: dict[str, Any] = {"url": link.url, "title": link.title}
    if link.title in _LINK_TYPES:
        ref["type"] = _LINK_TYPES[link.title]
    return ref


def event(talk: Talk, track_slugs: dict[str, str]) -> dict[str, Any]:
    return {
        "guid": talk.guid,
        "type": event_type(talk.type),
        "start": iso_local(talk.start),
        "end": iso_local(talk.end),
        "room": {"name": talk.room.name, "slug": talk.room.slug, "guid": talk.room.guid},
        "url": talk.url or f"urn:uuid:{talk.guid}",
        "slug": talk.slug,
        "title": talk.title,
        "subtitle": talk.subtitle,
        "language": language(talk.language),
        "track": {"slug": track_slugs.get(talk.track, GENERAL_TRACK)},
        "abstract": talk.abstract,
        "description": talk.description,
        "logo": {"url": talk.logo} if talk.logo else None,
        "state": "CONFIRMED",
        "participants": [{"guid": p.guid, "name": p.name, "role": "SPEAKER"} for p in talk.persons],
        "links": [_reference(link) for link in talk.links],
        "attachments": [_reference(link) for link in talk.attachments],
    }


def conference(schedule: Schedule, track_slugs: dict[str, str]) -> dict[str, Any]:
    head: dict[str, Any] = {
        "acronym": schedule.acronym.replace("-", "_"),
        "title": schedule.title,
        "start": iso_local(schedule.days[0].start),
        "end": iso_local(schedule.days[-1].end),
        "timeslot_duration": duration_value(parse_duration(schedule.timeslot)),
    }
    if ZONE_NAME_RE.search(schedule.zone_name):
        head["time_zone_name"] = schedule.zone_name
    if schedule.url:
        head["url"] = schedule.url
    if schedule.logo:
        head["logo"] = {"url": schedule.logo}
    tracks = [{"name": t.name, "slug": t.slug, **({"color": t.color} if t.color else {})} for t in schedule.tracks]
    if any(talk.track not in track_slugs for talk in schedule.talks) and \
            GENERAL_TRACK not in {t["slug"] for t in tracks}:
        tracks.append({"name": "General", "slug": GENERAL_TRACK})
    head["tracks"] = tracks
    head["rooms"] = [{"name": room.name, "slug": room.slug, "guid": room.guid} for room in schedule.rooms]
    head["days"] = [{"index": day.index, "date": day.date.isoformat(), "start": iso_local(day.start),
                     "end": iso_local(day.end)} for day in schedule.days]
    return head


def render(schedule: Schedule) -> Iterator[str]:
    track_slugs: dict[str, str] = {}
    for track in schedule.tracks:
        track_slugs.setdefault(track.name, track.slug)
    yield json.dumps({"$schema": SCHEMA_URL, "generator": GENERATOR}, ensure_ascii=False)[:-1]
    head = json.dumps({"version": schedule.version, "conference": conference(schedule, track_slugs)},
                      ensure_ascii=False)
    yield f', "schedule": {head[:-1]}, "events": ['
    for n, talk in enumerate(schedule.talks):
        yield (", " if n else "") + json.dumps(event(talk, track_slugs), ensure_ascii=False)
    yield "]}}\n"
