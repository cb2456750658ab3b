"""The schedule as calendar components, shared by the iCal and the xCal writer so both carry the same content.

A component is a name, its properties (name, parameters, value already in iCal value syntax) and sub-components.
The time zone is a real VTIMEZONE built from the tz database: every offset change of the zone within the
schedule's range becomes a STANDARD or DAYLIGHT observance (preceded by one for the offset in force at the start),
so calendar programs need no zone table of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import chain

from shared.schedule.snapshot import Schedule, Talk
from shared.schedule.xmltext import calendar_text

PRODID = "-//open-event-portability//schedule 1.0//EN"
_STEP = timedelta(hours=6)  # zones never change offset twice within six hours


@dataclass
class Prop:
    name: str
    value: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Component:
    name: str
    props: list[Prop] = field(default_factory=list)
    children: list[Component] | Iterator[Component] = field(default_factory=list)  # iterated once by a writer

    def add(self, name: str, value: str, **params: str) -> None:
        self.props.append(Prop(name, value, {k.replace("_", "-").upper(): v for k, v in params.items()}))


# ------------------------------------------------------------------------------------------------- value syntax


def escape(value: str) -> str:
    """An iCal TEXT value: backslash, semicolon, comma and newline escaped, controls removed."""
    text = calendar_text(value)
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def param_value(value: str) -> str:
    """A parameter value: quoted (no ``"`` or controls survive; they cannot be escaped in a parameter)."""
    return '"' + calendar_text(value).replace('"', "'").replace("\n", " ").replace("\t", " ") + '"'


def local_stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def utc_offset(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}{minutes:02d}" + (f"{secs:02d}" if secs else "")


def duration_value(minutes: int) -> str:
    hours, mins = divmod(minutes, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{mins}M" if mins or not hours else "")


# ---------------------------------------------------------------------------------------------------- VTIMEZONE


def transitions(tz: tzinfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """UTC instants in [start, end] at which ``tz`` changes its offset, to the second."""
    moment = start.astimezone(UTC)
    end = end.astimezone(UTC)
    offset = moment.astimezone(tz).utcoffset()
    while moment < end:
        step = min(moment + _STEP, end)
        if step.astimezone(tz).utcoffset() != offset:
            low, high = moment, step  # offset(low) == offset, offset(high) differs
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            yield high.replace(microsecond=0)
            offset = high.astimezone(tz).utcoffset()
        moment = step


def _observance(tz: tzinfo, onset: datetime, before: timedelta) -> Component:
    local = onset.astimezone(tz)
    kind = "DAYLIGHT" if local.dst() else "STANDARD"
    part = Component(kind)
    part.add("DTSTART", local_stamp((onset + before).replace(tzinfo=None)))
    part.add("TZOFFSETFROM", utc_offset(before))
    part.add("TZOFFSETTO", utc_offset(local.utcoffset() or timedelta(0)))
    name = local.tzname()
    if name:
        part.add("TZNAME", escape(name))
    return part


def vtimezone(tz: tzinfo, zone_name: str, start: datetime, end: datetime) -> Component:
    """VTIMEZONE of ``tz`` for [start, end]: the offset in force at ``start``, then every change up to ``end``."""
    start = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = start.astimezone(tz).utcoffset() or timedelta(0)
    observances = [_observance(tz, start, first)]
    for onset in transitions(tz, start, end):
        before = (onset - timedelta(seconds=1)).astimezone(tz).utcoffset() or timedelta(0)
        observances.append(_observance(tz, onset, before))
    component = Component("VTIMEZONE", children=observances)
    component.add("TZID", zone_name)
    return component


# ------------------------------------------------------------------------------------------------------- events


def description(talk: Talk) -> str:
    parts = [part for part in (talk.abstract.strip(), talk.description.strip()) if part]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts = parts[:1]
    if talk.persons:
        parts.append("Speakers: " + ", ".join(p.name for p in talk.persons))
    return "\n\n".join(parts)


def vevent(talk: Talk, zone_name: str, stamp: datetime) -> Component:
    event = Component("VEVENT")
    event.add("UID", talk.guid)
    event.add("DTSTAMP", utc_stamp(stamp))
    event.add("DTSTART", local_stamp(talk.start), tzid=zone_name)
    event.add("DTEND", local_stamp(talk.end), tzid=zone_name)
    event.add("SUMMARY", escape(talk.title + (f" - {talk.subtitle}" if talk.subtitle.strip() else "")))
    text = description(talk)
    if text:
        event.add("DESCRIPTION", escape(text))
    if talk.room.id is not None:  # the "Unassigned" room the XML formats need is no place for a calendar
        event.add("LOCATION", escape(talk.room.name))
    if talk.track.strip():
        event.add("CATEGORIES", escape(talk.track))
    if talk.url:
        event.add("URL", talk.url)
    event.add("STATUS", "CONFIRMED")
    event.add("CLASS", "PUBLIC")
    for person in talk.persons:
        event.add("ATTENDEE", f"urn:uuid:{person.guid}", cn=param_value(person.name), role="CHAIR")
    return event


def vcalendar(schedule: Schedule, stamp: datetime | None = None) -> Component:
    """The whole calendar. ``stamp`` (DTSTAMP) defaults to the schedule's own ``generated_at``."""
    stamp = stamp or schedule.generated_at
    calendar = Component("VCALENDAR")
    calendar.add("VERSION", "2.0")
    calendar.add("PRODID", PRODID)
    calendar.add("CALSCALE", "GREGORIAN")
    calendar.add("METHOD", "PUBLISH")
    calendar.add("X-WR-CALNAME", escape(schedule.title))
    calendar.add("X-WR-TIMEZONE", schedule.zone_name)
    start = min([schedule.days[0].start] + [t.start for t in schedule.talks[:1]])
    end = max([schedule.days[-1].end] + [t.end for t in schedule.talks])
    zone = vtimezone(schedule.tz, schedule.zone_name, start - timedelta(days=1), end + timedelta(days=1))
    # Events are built as the writer reaches them: a big schedule is never all in memory twice.
    calendar.children = chain([zone], (vevent(talk, schedule.zone_name, stamp) for talk in schedule.talks))
    return calendar


__all__ = ["PRODID", "Component", "Prop", "duration_value", "escape", "local_stamp", "param_value", "transitions",
           "utc_offset", "utc_stamp", "vcalendar", "vevent", "vtimezone"]
