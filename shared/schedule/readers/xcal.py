"""xCal: frab's and pentabarf's ``<iCalendar><vcalendar><vevent>`` dialect (properties as child elements,
``pentabarf:*`` extensions), and RFC 6321's ``<properties>``/``<components>`` form. Both become the components
``ical.py`` maps to sessions: ``<pentabarf:event-id>`` is read as ``X-PENTABARF-EVENT-ID`` and so on.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from shared.archive.safezip import ArchiveError
from shared.schedule.readers import ical
from shared.schedule.readers.builder import ScheduleBuilder
from shared.schedule.readers.safety import ScheduleLimits, parse_xml

_COMPONENTS = frozenset({"vcalendar", "vevent", "vtimezone", "standard", "daylight", "valarm", "vtodo", "vjournal"})


def read(data: bytes, limits: ScheduleLimits, source_format: str = "xcal",
         pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    schedule = ScheduleBuilder(source_format, limits.max_records, pause)
    root = parse_xml(data, limits, schedule.warn, "xCal")
    calendar_element = root if _local(root) == "vcalendar" else next(
        (e for e in root.iter() if isinstance(e.tag, str) and _local(e) == "vcalendar"), None)
    if calendar_element is None:
        raise ArchiveError("wrong_format", "the xCal file holds no <vcalendar>")
    calendar = _component(calendar_element)
    zones = {c.value("TZID"): c for c in calendar.children if c.name == "VTIMEZONE"}
    ical.fill(schedule, calendar, [c for c in calendar.children if c.name == "VEVENT"], zones, text=str.strip)
    return schedule


def _component(element: etree._Element) -> ical.Component:
    component = ical.Component(_local(element).upper())
    properties = [c for c in element if isinstance(c.tag, str) and _local(c) == "properties"]
    if properties:  # RFC 6321
        for prop in properties[0]:
            if isinstance(prop.tag, str):
                params = {}
                for group in prop.iterfind("{*}parameters"):
                    for param in group:
                        params[_local(param).upper()] = "".join(param.itertext()).strip()
                values = [v for v in prop if isinstance(v.tag, str) and _local(v) != "parameters"]
                text = ",".join("".join(v.itertext()).strip() for v in values) if values else (prop.text or "")
                component.props.setdefault(_name(prop), []).append((params, text))
        for group in element.iterfind("{*}components"):
            component.children.extend(_component(c) for c in group if isinstance(c.tag, str))
        return component
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if _local(child) in _COMPONENTS:
            component.children.append(_component(child))
        else:
            params = {k.upper(): v for k, v in child.attrib.items()}
            component.props.setdefault(_name(child), []).append((params, "".join(child.itertext())))
    return component


def _name(element: etree._Element) -> str:
    qname = etree.QName(element)
    prefix = element.prefix
    if prefix and prefix.lower() not in ("xcal",) and "xcal" not in (qname.namespace or ""):
        return f"X-{prefix.upper()}-{qname.localname.upper()}"
    return qname.localname.upper()


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname.lower()
