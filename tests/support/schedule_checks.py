"""Validators of exported schedule files, against the schemas kept in the repo (``shared/schedule/schemas``), and
two conference-app style readers (Giggity's XML walk, EventFahrplan's JSON walk) that reduce a file to what an app
shows: sessions with their room, start, duration and persons."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import icalendar
import jsonschema
from lxml import etree

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schedule" / "schemas"
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")


@cache
def frab_xsd() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "schedule.xml.xsd")))


@cache
def json_validator() -> jsonschema.Draft6Validator:
    schema = json.loads((SCHEMAS / "schema.json").read_text())
    return jsonschema.Draft6Validator(schema, format_checker=jsonschema.FormatChecker())


@cache
def json2_validator() -> jsonschema.Draft6Validator:
    schema = json.loads((SCHEMAS / "schema2.json").read_text())
    return jsonschema.Draft6Validator(schema, format_checker=jsonschema.FormatChecker())


def parse_xml(data: bytes) -> etree._Element:
    """Parsed as an app would, without entities or network: a file that needs them is broken."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    return etree.fromstring(data, parser)


def check_frab_xml(data: bytes) -> etree._Element:
    """schedule.xml valid against the C3VOC XSD; every time with an offset; ids and GUIDs unique."""
    root = parse_xml(data)
    schema = frab_xsd()
    assert schema.validate(root), str(schema.error_log)[:2000]
    for day in root.iter("day"):
        assert _OFFSET.search(day.get("start")) and _OFFSET.search(day.get("end"))
    events = list(root.iter("event"))
    for event in events:
        assert _OFFSET.search(event.findtext("date")), event.findtext("date")
    assert len({e.get("id") for e in events}) == len(events)
    assert len({e.get("guid") for e in events}) == len(events)
    return root


def check_schedule_json(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    errors = list(json_validator().iter_errors(doc))
    assert not errors, [(e.message[:300], list(e.absolute_path)) for e in errors[:5]]
    events = [e for day in doc["schedule"]["conference"]["days"] for talks in day["rooms"].values() for e in talks]
    for event in events:
        assert datetime.fromisoformat(event["date"]).utcoffset() is not None
        assert re.fullmatch(r"\d{2}:\d{2}", event["duration"])
        assert _URI.match(event["url"]), event["url"]  # format "uri" (jsonschema checks it only with rfc3987)
    assert len({e["id"] for e in events}) == len(events)
    assert len({e["guid"] for e in events}) == len(events)
    return doc


def check_schedule2_json(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    errors = list(json2_validator().iter_errors(doc))
    assert not errors, [(e.message[:300], list(e.absolute_path)) for e in errors[:5]]
    events = doc["schedule"]["events"]
    for event in events:
        assert datetime.fromisoformat(event["start"]).utcoffset() is not None
        assert _URI.match(event["url"]), event["url"]
    assert len({e["guid"] for e in events}) == len(events)
    tracks = {t["slug"] for t in doc["schedule"]["conference"]["tracks"]}
    assert {e["track"]["slug"] for e in events} <= tracks
    return doc


def check_ical(data: bytes) -> icalendar.Calendar:
    """RFC 5545 as far as a parser and the wire rules can tell: CRLF only, folded at 75 octets, parsed back by
    ``icalendar`` without errors, every VTIMEZONE with an observance, every DTSTART in a defined zone."""
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF or CR"
    assert all(len(line) <= 75 for line in data.split(b"\r\n")), "unfolded line"
    calendar = icalendar.Calendar.from_ical(data.decode("utf-8"))
    zones = {}
    for tz in calendar.walk("VTIMEZONE"):
        parts = [c.name for c in tz.subcomponents]
        assert parts and set(parts) <= {"STANDARD", "DAYLIGHT"}, parts
        zones[str(tz["TZID"])] = tz
    for event in calendar.walk("VEVENT"):
        for prop in ("UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY"):
            assert prop in event, prop
        assert event["DTSTART"].params["TZID"] in zones
        assert event["DTSTART"].dt.utcoffset() is not None
        for error in getattr(event, "errors", []):
            raise AssertionError(error)
    uids = [str(e["UID"]) for e in calendar.walk("VEVENT")]
    assert len(set(uids)) == len(uids)
    return calendar


def ical_content(data: bytes) -> list[tuple]:
    """The iCal file as (component path, property, parameters, unescaped value) tuples."""
    from shared.schedule.xcal import TEXT_PROPERTIES, unescape

    content, stack = [], []
    lines = data.decode("utf-8").replace("\r\n ", "").split("\r\n")
    for line in filter(None, lines):
        match = re.match(r'((?:[^:"]|"[^"]*")*):(.*)', line, re.S)
        assert match, line
        head, value = match.group(1), match.group(2)
        # parameter values are quoted when they hold ; or :, so split outside quotes
        parts = re.findall(r'(?:[^;"]|"[^"]*")+', head)
        name, params = parts[0], dict(p.split("=", 1) for p in parts[1:])
        params = {k.lower(): v.strip('"') for k, v in params.items()}
        if name == "BEGIN":
            stack.append(value.lower())
        elif name == "END":
            stack.pop()
        else:
            content.append(("/".join(stack), name.lower(), tuple(sorted(params.items())),
                            unescape(value) if name in TEXT_PROPERTIES else value))
    return content


def xcal_content(data: bytes) -> list[tuple]:
    """The xCal file as the same tuples (pentabarf's own elements left out: they have no iCal property)."""
    root = parse_xml(data)
    assert root.tag == "iCalendar"
    content = []

    def walk(element: etree._Element, path: list[str]) -> None:
        for child in element:
            if not isinstance(child.tag, str) or child.tag.startswith("{"):
                continue
            if len(child):
                walk(child, path + [child.tag])
            else:
                content.append(("/".join(path), child.tag, tuple(sorted(child.attrib.items())), child.text or ""))

    for calendar in root:
        walk(calendar, [calendar.tag])
    return content


def check_csv_zip(data: bytes) -> dict[str, list[dict[str, str]]]:
    csv.field_size_limit(1 << 28)  # RFC 4180 sets no limit; the hostile test writes 300,000-character cells
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["sessions.csv", "speakers.csv"]
        tables = {}
        for name in archive.namelist():
            text = archive.read(name).decode("utf-8-sig")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            tables[name.removesuffix(".csv")] = rows
    for row in tables["sessions"]:
        if row["start"]:
            assert datetime.fromisoformat(row["start"]).utcoffset() is not None
    return tables


# ------------------------------------------------------------------------------------- conference-app readers


def giggity_sessions(data: bytes) -> dict[str, dict[str, Any]]:
    """What Giggity's schedule.xml reader keeps: per event (by guid) its title, room (from the enclosing room),
    day date, start, duration and person names, walking schedule/conference/day/room/event."""
    root = parse_xml(data)
    assert root.find("conference") is not None
    found: dict[str, dict[str, Any]] = {}
    for day in root.findall("day"):
        for room in day.findall("room"):
            for event in room.findall("event"):
                guid = event.get("guid")
                assert guid not in found, f"duplicate event {guid}"
                found[guid] = {
                    "title": event.findtext("title"), "room": room.get("name"), "day": day.get("date"),
                    "start": datetime.fromisoformat(event.findtext("date")), "duration": event.findtext("duration"),
                    "persons": [p.text or "" for p in event.iterfind("persons/person")],
                }
    return found


def fahrplan_sessions(data: bytes) -> dict[str, dict[str, Any]]:
    """What EventFahrplan's schedule.json reader keeps, walking schedule.conference.days[].rooms{name: [event]}:
    persons by ``public_name`` or, for pretalx-style persons, ``name``."""
    conference = json.loads(data)["schedule"]["conference"]
    found: dict[str, dict[str, Any]] = {}
    for day in conference["days"]:
        for room_name, events in day["rooms"].items():
            for event in events:
                assert event["guid"] not in found, f"duplicate event {event['guid']}"
                found[event["guid"]] = {
                    "title": event["title"], "room": room_name, "day": day["date"],
                    "start": datetime.fromisoformat(event["date"]), "duration": event["duration"],
                    "persons": [p.get("public_name") or p.get("name") or "" for p in event["persons"]],
                }
    return found
