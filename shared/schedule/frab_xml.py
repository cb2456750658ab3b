"""frab's ``schedule.xml`` (the C3VOC ``schedule.xml.xsd``): conference, then days of rooms of events.

Days are local conference days (day change included); every room is listed on every day, as frab does; each event
carries its GUID, slug, persons (id, GUID), recording licence and opt-out, links and attachments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from shared.schedule.days import iso_local
from shared.schedule.snapshot import Link, Schedule, Talk
from shared.schedule.xmlout import XML_DECLARATION, attrs, element, optional
from shared.schedule.xmltext import escape_text

GENERATOR = {"name": "open-event-portability", "version": "1.0"}


def conference_span(schedule: Schedule, i: str) -> list[str]:
    """``<start>``, ``<end>``, ``<days>`` and ``<timeslot_duration>`` of ``<conference>`` (pentabarf's too)."""
    return [
        element("start", schedule.start_date.isoformat() if schedule.start_date else "", i),
        element("end", schedule.end_date.isoformat() if schedule.end_date else "", i),
        element("days", len(schedule.days), i),
        element("timeslot_duration", schedule.timeslot, i),
    ]


def conference(schedule: Schedule) -> str:
    i = "    "
    parts = [
        "  <conference>\n",
        element("acronym", schedule.acronym, i),
        element("title", schedule.title, i),
        *conference_span(schedule, i),
        optional("logo", schedule.logo, i),
        optional("url", schedule.url, i),
        element("time_zone_name", schedule.zone_name, i),
    ]
    parts += [element("track", track.name, i, name=track.name, color=track.color, slug=track.slug)
              for track in schedule.tracks]
    parts.append("  </conference>\n")
    return "".join(parts)


def fields(talk: Talk, i: str, *names: str) -> list[str]:
    """One element per name, holding the talk's attribute of that name."""
    return [element(name, getattr(talk, name), i) for name in names]


def link_list(tag: str, links: Iterable[Link], i: str) -> list[str]:
    """``<links>`` of ``<link href>`` elements (or ``<attachments>`` of ``<attachment href>``)."""
    return [f"{i}<{tag}s>\n", *(element(tag, link.title, i + "  ", href=link.url) for link in links),
            f"{i}</{tag}s>\n"]


def event(talk: Talk, indent: str = "      ") -> str:
    i = indent + "  "
    parts = [
        f"{indent}<event{attrs({'guid': talk.guid, 'id': talk.id})}>\n",
        element("room", talk.room.name, i),
        *fields(talk, i, "title", "subtitle", "type"),
        element("date", iso_local(talk.start), i),
        element("start", talk.start.strftime("%H:%M"), i),
        *fields(talk, i, "duration", "abstract", "slug", "track"),
        optional("logo", talk.logo, i),
        f"{i}<persons>\n",
        *(element("person", p.name, i + "  ", id=p.id, guid=p.guid) for p in talk.persons),
        f"{i}</persons>\n",
        *fields(talk, i, "language", "description"),
        f"{i}<recording>\n",
        element("license", talk.recording_license, i + "  "),
        element("optout", "true" if talk.do_not_record else "false", i + "  "),
        f"{i}</recording>\n",
        *link_list("link", talk.links, i),
        *link_list("attachment", talk.attachments, i),
        optional("url", talk.url or None, i),
        optional("feedback_url", talk.feedback_url, i),
        f"{indent}</event>\n",
    ]
    return "".join(parts)


def document(schedule: Schedule, head: str, write_event: Callable[[Talk], str], *, room_guids: bool) -> Iterator[str]:
    """``<schedule>`` with ``head`` (everything before the days), then each day's rooms with their events."""
    yield XML_DECLARATION
    yield "<schedule>\n"
    yield head
    for day in schedule.days:
        bounds = {"index": day.index, "date": day.date.isoformat(), "start": iso_local(day.start),
                  "end": iso_local(day.end)}
        yield f"  <day{attrs(bounds)}>\n"
        for room, talks in day.by_room(schedule.rooms):
            yield f"    <room{attrs({'name': room.name, 'guid': room.guid if room_guids else None})}>\n"
            for talk in talks:
                yield write_event(talk)
            yield "    </room>\n"
        yield "  </day>\n"
    yield "</schedule>\n"


def render(schedule: Schedule) -> Iterator[str]:
    head = (f"  <generator{attrs(GENERATOR)}/>\n  <version>{escape_text(schedule.version)}</version>\n"
            + conference(schedule))
    return document(schedule, head, event, room_guids=True)
