"""Pentabarf-style ``schedule.xml``, the shape the Open Event Server offered and FOSDEM still publishes, made valid.

Pentabarf's tree (conference, days of rooms of events with start, duration, room, slug, title, subtitle, track,
type, language, abstract, description, persons, attachments, links) with what its producers leave out and the
C3VOC XSD requires: ``<version>``, each day's ``start``/``end``, each event's ``guid`` and ``date``. Nothing
frab-only (generator, recording, room and person GUIDs). It validates against ``schedule.xml.xsd``.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.schedule.days import iso_local
from shared.schedule.frab_xml import conference_span, document, fields, link_list
from shared.schedule.snapshot import Schedule, Talk
from shared.schedule.xmlout import attrs, element
from shared.schedule.xmltext import escape_text


def conference(schedule: Schedule) -> str:
    i = "    "
    return "".join([
        "  <conference>\n",
        element("title", schedule.title, i),
        element("acronym", schedule.acronym, i),
        *conference_span(schedule, i),
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
        *fields(talk, i, "slug", "title", "subtitle", "track", "type", "language", "abstract", "description"),
        f"{i}<persons>\n",
        *(element("person", p.name, i + "  ", id=p.id) for p in talk.persons),
        f"{i}</persons>\n",
        *link_list("attachment", talk.attachments, i),
        *link_list("link", talk.links, i),
        f"{indent}</event>\n",
    ])


def render(schedule: Schedule) -> Iterator[str]:
    head = f"  <version>{escape_text(schedule.version)}</version>\n" + conference(schedule)
    return document(schedule, head, event, room_guids=False)
