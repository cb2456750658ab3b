"""iCalendar (RFC 5545) and the calendar mapping shared with xCal (``xcal.py``).

Each VEVENT is a session: SUMMARY the title, DESCRIPTION, LOCATION the room, CATEGORIES the type, ATTENDEE (CN, else
the value) the persons, DTSTART with DTEND or DURATION. Times: ``TZID=`` names a zone (read through the tz database;
a TZID the database does not know is read by its VTIMEZONE's offset, with a warning), ``Z`` is UTC, neither is floating
wall time. The event's zone is ``X-WR-TIMEZONE``, else the TZID most events use, else UTC.

Identity: a UID ``<uuid>@host`` (frab) gives the GUID; the id in the file is a pentabarf/frab event id when the file
has one (``URL:.../events/70.html``, ``<pentabarf:event-id>``), else the UID's part before ``@``.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from shared.archive.safezip import ArchiveError
from shared.schedule.identity import is_guid
from shared.schedule.readers.builder import ScheduleBuilder, SessionDraft
from shared.schedule.readers.safety import ScheduleLimits, check_size, decode_text
from shared.schedule.readers.values import zone_for_offsets, zone_name

Property = tuple[dict[str, str], str]  # (parameters, raw value)


@dataclass
class Component:
    name: str
    props: dict[str, list[Property]] = field(default_factory=dict)
    children: list[Component] = field(default_factory=list)

    def first(self, name: str) -> Property | None:
        values = self.props.get(name)
        return values[0] if values else None

    def value(self, name: str) -> str:
        prop = self.first(name)
        return prop[1] if prop is not None else ""


_PARAM = re.compile(r';([A-Za-z0-9-]+)=("[^"]*"|[^;:]*)')
_NAME = re.compile(r"^([A-Za-z0-9-]+)")


def parse_components(text: str, limits: ScheduleLimits) -> Component:
    """The VCALENDAR of an iCal text (lines unfolded, properties with their parameters; values left raw)."""
    lines = re.split(r"\r\n|\n|\r", text)
    if len(lines) > limits.max_elements:
        raise ArchiveError("too_many_elements", f"the iCal file holds more than {limits.max_elements} lines")
    unfolded: list[str] = []
    for line in lines:
        if len(line) > limits.max_string_chars:
            raise ArchiveError("text_too_long", "the iCal file holds a property longer than the limit of "
                               f"{limits.max_string_chars} characters")
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += line[1:]
            if len(unfolded[-1]) > limits.max_string_chars:
                raise ArchiveError("text_too_long", "the iCal file holds a property longer than the limit of "
                                   f"{limits.max_string_chars} characters")
        elif line.strip():
            unfolded.append(line)
    stack: list[Component] = [Component("ROOT")]
    for line in unfolded:
        name_match = _NAME.match(line)
        if name_match is None:
            continue
        name = name_match.group(1).upper()
        params: dict[str, str] = {}
        position = name_match.end()
        while True:
            param = _PARAM.match(line, position)
            if param is None:
                break
            params[param.group(1).upper()] = param.group(2).strip('"')
            position = param.end()
        if line[position:position + 1] != ":":
            continue
        value = line[position + 1:]
        if name == "BEGIN":
            if len(stack) > limits.max_depth:
                raise ArchiveError("too_deep", f"the iCal file nests components deeper than {limits.max_depth}")
            component = Component(value.strip().upper())
            stack[-1].children.append(component)
            stack.append(component)
        elif name == "END":
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1].props.setdefault(name, []).append((params, value))
    calendars = [c for c in stack[0].children if c.name == "VCALENDAR"]
    if not calendars:
        raise ArchiveError("wrong_format", "the iCal file holds no VCALENDAR")
    first = calendars[0]
    for other in calendars[1:]:  # calendars pasted one after another (cat a.ics b.ics): one schedule
        first.children.extend(other.children)
        for name, values in other.props.items():
            first.props.setdefault(name, values)
    if len(calendars) > 1:
        first.props.setdefault("X-CALENDARS-MERGED", [({}, str(len(calendars)))])
    return first


_FOLD = re.compile(rb"\r?\n[ \t]")


def unfold_bytes(data: bytes) -> bytes:
    """Folds joined before decoding: RFC 5545 folds by octets, and producers split UTF-8 characters across lines."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data  # UTF-16: folds are joined on the decoded text
    return _FOLD.sub(b"", data)


def unescape(value: str) -> str:
    return re.sub(r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def read(data: bytes, limits: ScheduleLimits, source_format: str = "ical",
         pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    check_size(data, limits, "iCal")
    calendar = parse_components(decode_text(unfold_bytes(data), "iCal"), limits)
    schedule = ScheduleBuilder(source_format, limits.max_records, pause)
    merged = calendar.value("X-CALENDARS-MERGED")
    if merged:
        schedule.warn("calendars_merged", f"the file holds {merged} VCALENDARs one after another; their events are "
                      "read as one schedule (named and zoned by the first)", file="event")
    zones = {c.value("TZID"): c for c in calendar.children if c.name == "VTIMEZONE"}
    fill(schedule, calendar, [c for c in calendar.children if c.name == "VEVENT"], zones, text=unescape)
    return schedule


# ------------------------------------------------------------------------------------------ calendar -> schedule


def fill(schedule: ScheduleBuilder, calendar: Component, events: list[Component], zones: dict[str, Component],
         text: Any) -> None:
    """Sessions from calendar components (``text`` turns a raw value into text: iCal unescapes, xCal does not)."""
    schedule.name = text(calendar.value("X-WR-CALNAME")) or None
    description = text(calendar.value("X-WR-CALDESC"))
    if description and description != schedule.name:
        schedule.event_fields["description"] = description
    prodid = calendar.value("PRODID")
    if prodid:
        schedule.event_x["extra"] = {schedule.source_format: {"prodid": prodid}}
    resolver = _Zones(schedule, zones)
    used: Counter[str] = Counter()
    for n, (event, start, end, minutes, instance) in enumerate(_occurrences(schedule, events, resolver, used,
                                                                            text), 1):
        uid = text(event.value("UID"))
        source_id = _source_id(event, uid, text)
        where = f"VEVENT {uid[:80]!r}" if uid else f"VEVENT #{n}"
        if instance is not None:  # one occurrence of a recurring entry: its own id, a GUID derived from it
            source_id = f"{source_id}/{instance}"
            where = f"{where} (occurrence {instance})"
        if start is None:
            schedule.warn("invalid_value", f"{where} has no usable DTSTART; it is left unscheduled",
                          file="sessions", record_id=source_id, field="DTSTART")
        head = uid.split("@", 1)[0]
        guid = head if is_guid(head) and instance is None else None
        persons = []
        for params, value in event.props.get("ATTENDEE", []):
            name = params.get("CN") or text(value)
            if name.lower().startswith(("mailto:", "invalid:")):
                name = name.split(":", 1)[1]
            key = schedule.person(None, name)
            if key is not None:
                persons.append(key)
        categories = [c.strip() for _, v in event.props.get("CATEGORIES", []) for c in re.split(r"(?<!\\),", v)
                      if c.strip()]
        x: dict[str, Any] = {"extra": {schedule.source_format: {k: v for k, v in {
            "uid": uid, "url": text(event.value("URL")), "categories": categories[1:] or None,
            "status": event.value("STATUS")}.items() if v}}}
        slug = text(event.value("X-PENTABARF-EVENT-SLUG"))
        if slug:
            x["slug"] = slug
        language = text(event.value("X-PENTABARF-LANGUAGE-CODE")) or None
        title = text(event.value("X-PENTABARF-TITLE")) or text(event.value("SUMMARY"))
        schedule.add_session(SessionDraft(
            source_id=source_id, title=title, start=start, minutes=minutes, end=end,
            room=text(event.value("LOCATION")) or None, type=text(categories[0]) if categories else None,
            guid=guid, subtitle=text(event.value("X-PENTABARF-SUBTITLE")) or None,
            description=text(event.value("DESCRIPTION")) or None, language=language, persons=persons, x=x,
        ), where)
    organizers = {text(e.value("ORGANIZER")).split(":", 1)[-1] for e in events}
    if not schedule.name and len(organizers) == 1 and "" not in organizers:
        schedule.name = organizers.pop()  # frab's iCal has no calendar name; every event names the conference
    named = calendar.value("X-WR-TIMEZONE").strip()
    if named:
        schedule.timezone = named
    elif used:
        schedule.timezone = used.most_common(1)[0][0]


MAX_OCCURRENCES = 1000  # of one recurring entry; a schedule holds talks, not a years-long series


def _occurrences(schedule: ScheduleBuilder, events: list[Component], resolver: _Zones, used: Counter[str],
                 text: Any) -> list[tuple[Component, datetime | None, datetime | None, int | None, str | None]]:
    """(component, start, end, minutes, occurrence key) per session: a recurring entry (RRULE with COUNT or UNTIL,
    less its EXDATEs) gives one per occurrence, an entry with RECURRENCE-ID replaces the occurrence it names."""
    overrides: dict[tuple[str, datetime], Component] = {}
    for event in events:
        if event.first("RECURRENCE-ID") is not None:
            recurrence = resolver.time(event.first("RECURRENCE-ID"), "RECURRENCE-ID", Counter())
            if recurrence is not None:
                overrides[(text(event.value("UID")), _instant(recurrence))] = event
    out: list[tuple[Component, datetime | None, datetime | None, int | None, str | None]] = []
    replaced: set[tuple[str, datetime]] = set()

    def span(event: Component, where: str, counter: Counter[str]) -> tuple[datetime | None, datetime | None,
                                                                           int | None]:
        start = resolver.time(event.first("DTSTART"), where, counter)
        end = resolver.time(event.first("DTEND"), where, Counter())
        minutes = None
        if end is None and event.value("DURATION").strip():
            minutes = _duration(event.value("DURATION"))
            if minutes is None:
                schedule.warn("invalid_value", f"{where}: DURATION {event.value('DURATION')[:30]!r} is not a "
                              "positive duration; no end time", file="sessions", field="DURATION")
        elif end is None and _is_date(event.first("DTSTART")):
            minutes = 24 * 60  # RFC 5545: a DATE start with neither DTEND nor DURATION lasts one day
        return start, end, minutes

    for event in events:
        uid = text(event.value("UID"))
        where = f"VEVENT {uid[:80]!r}" if uid else "a VEVENT"
        is_override = event.first("RECURRENCE-ID") is not None
        if is_override:
            continue  # placed where its master's occurrence was (below), or alone when that is not found
        start, end, minutes = span(event, where, used)
        rule = event.value("RRULE").strip()
        if not rule or start is None:
            out.append((event, start, end, minutes, None))
            continue
        series = _expand(schedule, event, rule, start, resolver, where)
        if series is None:
            out.append((event, start, end, minutes, None))
            continue
        length = end - start if end is not None else None
        for occurrence in series:
            key = (uid, _instant(occurrence))
            instance = occurrence.strftime("%Y%m%dT%H%M%S")
            override = overrides.get(key)
            if override is not None:
                replaced.add(key)
                out.append((override, *span(override, where, Counter()), instance))
            else:
                out.append((event, occurrence, occurrence + length if length is not None else None, minutes,
                            instance))
    for key, override in overrides.items():
        if key not in replaced:
            out.append((override, *span(override, "a VEVENT with RECURRENCE-ID", Counter()),
                        key[1].strftime("%Y%m%dT%H%M%S")))
    return out


def _is_date(prop: Property | None) -> bool:
    return prop is not None and (prop[0].get("VALUE", "").upper() == "DATE" or bool(re.fullmatch(r"\s*\d{8}\s*",
                                                                                                   prop[1])))


def _instant(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _expand(schedule: ScheduleBuilder, event: Component, rule: str, start: datetime, resolver: _Zones,
            where: str) -> list[datetime] | None:
    """The occurrences of a bounded RRULE (None, with a warning, when it cannot be expanded)."""
    from dateutil.rrule import rrulestr  # only recurring entries need it

    upper = rule.upper()
    if "COUNT=" not in upper and "UNTIL=" not in upper:
        schedule.warn("recurrence_not_expanded", f"{where} repeats without end (RRULE {rule[:80]!r}); only its "
                      "first occurrence is imported", file="sessions", field="RRULE")
        return None
    try:
        if start.tzinfo is None and re.search(r"UNTIL=\d{8}T\d{6}Z", upper):
            upper = re.sub(r"(UNTIL=\d{8}T\d{6})Z", r"\1", upper)  # floating series, UNTIL read as wall time
        elif start.tzinfo is not None and re.search(r"UNTIL=\d{8}(;|$)", upper):
            upper = re.sub(r"(UNTIL=\d{8})(;|$)", r"\1T235959Z\2", upper)
        series = rrulestr(upper, dtstart=start, forceset=True)
        excluded = set()
        for params, raw in event.props.get("EXDATE", []):
            for value in raw.split(","):
                moment = resolver.time((params, value), where, Counter())
                if moment is not None:
                    excluded.add(_instant(moment))
        occurrences = []
        for occurrence in series:
            if _instant(occurrence) in excluded:
                continue
            occurrences.append(occurrence)
            if len(occurrences) > MAX_OCCURRENCES:
                raise ArchiveError("too_many_records", f"{where} repeats more than {MAX_OCCURRENCES} times "
                                   f"(RRULE {rule[:80]!r})", file="sessions", field="RRULE")
    except (ValueError, TypeError) as exc:
        schedule.warn("recurrence_not_expanded", f"{where}: RRULE {rule[:80]!r} cannot be read ({exc}); only its "
                      "first occurrence is imported", file="sessions", field="RRULE")
        return None
    schedule.warn("recurrence_expanded", f"{where} repeats (RRULE {rule[:80]!r}): imported as {len(occurrences)} "
                  "sessions, one per occurrence", file="sessions", field="RRULE")
    return occurrences


_EVENT_URL = re.compile(r"/events/(\d+)(?:\.html)?/?$")


def _source_id(event: Component, uid: str, text: Any) -> str | None:
    penta = text(event.value("X-PENTABARF-EVENT-ID"))
    if penta:
        return penta
    match = _EVENT_URL.search(text(event.value("URL")))
    if match:
        return match.group(1)
    return uid.split("@", 1)[0] if uid else None


_ICAL_DT = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2})?(Z)?)?$")


class _Zones:
    def __init__(self, schedule: ScheduleBuilder, zones: dict[str, Component]) -> None:
        self.schedule, self.zones = schedule, zones
        self.cache: dict[str, tuple[str, tzinfo] | None] = {}

    def zone(self, tzid: str, where: str) -> tuple[str, tzinfo] | None:
        if tzid in self.cache:
            return self.cache[tzid]
        found: tuple[str, tzinfo] | None = None
        candidates = [tzid, tzid.strip("/"), "/".join(tzid.strip("/").split("/")[-2:])]
        for candidate in candidates:
            name = zone_name(candidate)
            if name is not None:
                found = (name, ZoneInfo(name))
                break
        if found is None:
            matched = self._vtimezone_zone(tzid)
            if matched is not None:
                self.schedule.warn("unknown_timezone", f"TZID {tzid[:64]!r} is not in the tz database; its "
                                   f"VTIMEZONE keeps the offsets and changes of {matched}, which is used",
                                   file="sessions", field="TZID")
                found = (matched, ZoneInfo(matched))
        if found is None:
            offset = self._vtimezone_offset(tzid)
            if offset is not None:
                self.schedule.warn("unknown_timezone", f"TZID {tzid[:64]!r} is not in the tz database; its "
                                   f"VTIMEZONE offset {offset} is used for every date", file="sessions",
                                   field="TZID")
                found = (_offset_name(offset), timezone(offset))
            else:
                self.schedule.warn("unknown_timezone", f"{where}: TZID {tzid[:64]!r} is neither known nor defined "
                                   "by a VTIMEZONE; its times are read as floating", file="sessions", field="TZID")
        self.cache[tzid] = found
        return found

    def _vtimezone_zone(self, tzid: str) -> str | None:
        """The tz database zone whose offsets agree with the VTIMEZONE's rules through 2000-2035 (a custom TZID
        over real rules, as exported by calendars)."""
        component = self.zones.get(tzid)
        if component is None or not any(part.name in ("STANDARD", "DAYLIGHT") for part in component.children):
            return None
        rules = _vtimezone_rules(component)
        if rules is None:
            return None
        samples = [datetime(year, month, day, 12, tzinfo=UTC) for year in range(2000, 2036, 3)
                   for month in range(1, 13) for day in (1, 15)]
        return zone_for_offsets((moment, moment.astimezone(rules).utcoffset()) for moment in samples)

    def _vtimezone_offset(self, tzid: str) -> timedelta | None:
        component = self.zones.get(tzid)
        if component is None:
            return None
        for part in component.children:
            match = re.match(r"^([+-])(\d{2})(\d{2})", part.value("TZOFFSETTO").strip())
            if match:
                sign = -1 if match.group(1) == "-" else 1
                return sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        return None

    def time(self, prop: Property | None, where: str, used: Counter[str]) -> datetime | None:
        if prop is None:
            return None
        params, raw = prop
        match = _ICAL_DT.match(raw.strip())
        if match is None:
            self.schedule.warn("invalid_value", f"{where}: {raw[:40]!r} is not an iCal date-time", file="sessions",
                               field="DTSTART")
            return None
        year, month, day, hour, minute, second, utc = match.groups()
        if hour is None:  # VALUE=DATE: an all-day entry starts at midnight, floating
            return datetime.combine(date(int(year), int(month), int(day)), datetime.min.time())
        try:
            value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
        except ValueError:
            self.schedule.warn("invalid_value", f"{where}: {raw[:40]!r} is not a valid date-time", file="sessions",
                               field="DTSTART")
            return None
        if utc:
            return value.replace(tzinfo=UTC)
        tzid = params.get("TZID")
        if tzid:
            zone = self.zone(tzid, where)
            if zone is not None:
                used[zone[0]] += 1
                return value.replace(tzinfo=zone[1])
        return value


_DURATION = re.compile(r"^([+-])?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _duration(text: str) -> int | None:
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT") or match.group(1) == "-":
        return None
    _sign, weeks, days, hours, minutes, seconds = (int(g) if g and g not in "+-" else 0 for g in match.groups())
    return ((weeks * 7 + days) * 24 + hours) * 60 + minutes + (1 if seconds >= 30 else 0)


def _vtimezone_rules(component: Component) -> tzinfo | None:
    """The VTIMEZONE as a tzinfo (its STANDARD/DAYLIGHT parts with their RRULEs), or None when unreadable."""
    from dateutil.tz import tzical  # only calendars with a zone the tz database does not know need it

    lines = ["BEGIN:VTIMEZONE", "TZID:custom"]
    for part in component.children:
        if part.name not in ("STANDARD", "DAYLIGHT"):
            continue
        lines.append(f"BEGIN:{part.name}")
        for name in ("DTSTART", "TZOFFSETFROM", "TZOFFSETTO", "RRULE", "TZNAME"):
            for _params, value in part.props.get(name, []):
                lines.append(f"{name}:{value.strip()}")
        lines.append(f"END:{part.name}")
    lines.append("END:VTIMEZONE")
    try:
        return tzical(io.StringIO("\n".join(lines))).get("custom")
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _offset_name(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    if seconds % 3600 == 0 and abs(seconds) <= 14 * 3600:
        return "UTC" if seconds == 0 else f"Etc/GMT{-seconds // 3600:+d}"
    return "UTC"
