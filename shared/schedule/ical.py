"""iCalendar (RFC 5545): one VEVENT per session, times in the event's zone with a VTIMEZONE built from the tz
database, CRLF line endings, lines folded at 75 octets (never inside a UTF-8 sequence)."""

from __future__ import annotations

from collections.abc import Iterator

from shared.schedule.calendar import Component, vcalendar
from shared.schedule.snapshot import Schedule

MAX_OCTETS = 75


def fold(line: str) -> str:
    """``line`` folded: continuation lines start with a space; every physical line ends with CRLF."""
    data = line.encode("utf-8")
    if len(data) <= MAX_OCTETS:
        return line + "\r\n"
    pieces, start, limit = [], 0, MAX_OCTETS
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # back off to a character boundary
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start, limit = end, MAX_OCTETS - 1  # the leading space counts
    return "\r\n ".join(pieces) + "\r\n"


def content_line(name: str, value: str, params: dict[str, str]) -> str:
    return fold(name + "".join(f";{key}={val}" for key, val in params.items()) + ":" + value)


def lines(component: Component) -> Iterator[str]:
    yield f"BEGIN:{component.name}\r\n"
    for prop in component.props:
        yield content_line(prop.name, prop.value, prop.params)
    for child in component.children:
        yield from lines(child)
    yield f"END:{component.name}\r\n"


def render(schedule: Schedule) -> Iterator[str]:
    yield from lines(vcalendar(schedule))
