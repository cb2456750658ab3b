"""Pentabarf-style ``schedule.xml``, the shape the Open Event Server offered and FOSDEM still publishes, made valid.

Pentabarf's tree (conference, days of rooms of events with start, duration, room, slug, title, subtitle, track,
type, language, abstract, description, persons, attachments, links) with what its producers leave out and the
C3VOC XSD requires: ``<version>``, each day's ``start``/``end``, each event's ``guid`` and ``date``. Nothing
frab-only (generator, recording, room and person GUIDs). It validates against ``schedule.xml.xsd``.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.schedule.days import iso_local
from shared.schedule.frab_xml import document
from shared.schedule.snapshot import Schedule, Talk
from shared.schedule.xmlout import attrs, element
from shared.schedule.xmltext import escape_text


def conference(schedule: Schedule) -> str:
    i = "    "
    return "".join([
        "  <conference>\n",
        element("title", schedule.title, i),
        element("acronym", schedule.acronym, i),
        element("start", schedule.start_date.isoformat() if schedule.start_date else "", i),
        element("end", schedule.end_date.isoformat() if schedule.end_date else "", i),
        element("days", len(schedule.days), i),
        element("timeslot_duration", schedule.timeslot, i),
        element("time_zone_name", schedule.zone_name, i),
        "  </conference>\n",
    ])


def event(talk: Talk, indent: str = "      ") -> str:
    i = indent + "  "
    return "".join([
        f"{indent}<event{attrs({'id': talk.id, 'guid': talk.guid})}>\n",
        element("date", iso_local(talk.start), i),
        element("start", talk.start.strftime("%H:%M"), i),
        element("duration", talk.duration, i),
        element("room", talk.room.name, i),
        element("slug", talk.slug, i),
        element("title", talk.title, i),
        element("subtitle", talk.subtitle, i),
        element("track", talk.track, i),
        element("type", talk.type, i),
        element("language", talk.language, i),
        element("abstract", talk.abstract, i),
        element("description", talk.description, i),
        f"{i}<persons>\n",
        *(element("person", p.name, i + "  ", id=p.id) for p in talk.persons),
        f"{i}</persons>\n",
        f"{i}<attachments>\n",
        *(element("attachment", link.title, i + "  ", href=link.url) for link in talk.attachments),
        f"{i}</attachments>\n",
        f"{i}<links>\n",
        *(element("link", link.title, i + "  ", href=link.url) for link in talk.links),
        f"{i}</links>\n",
        f"{indent}</event>\n",
    ])


def render(schedule: Schedule) -> Iterator[str]:
    head = f"  <version>{escape_text(schedule.version)}</version>\n" + conference(schedule)
    return document(schedule, head, event, room_guids=False)
