"""xCal as this ecosystem reads it: pentabarf's and frab's ``<iCalendar>`` dialect, not RFC 6321.

Giggity and the other schedule readers that take ``.xcal`` files expect ``<iCalendar><vcalendar><vevent>`` with one
lower-case element per property holding the iCal value as text (``<dtstart>20150811T160000</dtstart>``), which is
what pentabarf and frab write; RFC 6321's ``<icalendar xmlns="urn:ietf:params:xml:ns:icalendar-2.0">`` with
``<properties>``/``<components>`` and typed ``<date-time>`` children is a different tree they do not read.

The content is exactly the iCal file's (same components, properties and values, built by ``calendar``); parameters
become attributes (``tzid="Europe/Berlin"``), so every time still names its zone, and the VTIMEZONE is there too.
Text values are written unescaped (XML escaping replaces iCal's). Pentabarf's own per-event elements
(``pentabarf:event-id``, ``event-slug``, ``title``, ``subtitle``, ``language``) are added for its readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from shared.schedule.calendar import Component, vcalendar
from shared.schedule.snapshot import Schedule, Talk
from shared.schedule.xmlout import XML_DECLARATION, attrs, element
from shared.schedule.xmltext import escape_text

PENTABARF_NS = "http://pentabarf.org"
XCAL_NS = "urn:ietf:params:xml:ns:xcal"
_ESCAPED = re.compile(r"\\(.)", re.S)
# Properties whose iCal value is TEXT (escaped in iCal, plain in this dialect).
TEXT_PROPERTIES = frozenset({"SUMMARY", "DESCRIPTION", "LOCATION", "CATEGORIES", "X-WR-CALNAME", "TZNAME"})


def unescape(value: str) -> str:
    """The text of an escaped iCal TEXT value."""
    if "\\" not in value:
        return value
    return _ESCAPED.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _param_attr(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _pentabarf(talk: Talk, indent: str) -> str:
    return "".join([
        element("pentabarf:event-id", talk.id, indent),
        element("pentabarf:event-slug", talk.slug, indent),
        element("pentabarf:title", talk.title, indent),
        element("pentabarf:subtitle", talk.subtitle, indent),
        element("pentabarf:language", talk.language, indent),
    ])


def elements(component: Component, talks: dict[str, Talk], indent: str = "  ") -> Iterator[str]:
    tag = component.name.lower()
    yield f"{indent}<{tag}>\n"
    inner = indent + "  "
    if component.name == "VEVENT":
        uid = next(p.value for p in component.props if p.name == "UID")
        yield _pentabarf(talks[uid], inner)
    for prop in component.props:
        value = unescape(prop.value) if prop.name in TEXT_PROPERTIES else prop.value
        params = {key.lower(): _param_attr(val) for key, val in prop.params.items()}
        name = prop.name.lower()
        yield f"{inner}<{name}{attrs(params)}>{escape_text(value)}</{name}>\n"
    for child in component.children:
        yield from elements(child, talks, inner)
    yield f"{indent}</{tag}>\n"


def render(schedule: Schedule) -> Iterator[str]:
    talks = {talk.guid: talk for talk in schedule.talks}
    yield XML_DECLARATION
    yield f'<iCalendar xmlns:pentabarf="{PENTABARF_NS}" xmlns:xCal="{XCAL_NS}">\n'
    yield from elements(vcalendar(schedule), talks)
    yield "</iCalendar>\n"
