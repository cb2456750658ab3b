"""Schedule files the format authors never saw, written here by hand in the shapes their producers emit (pretalx,
frab, pentabarf 0.4, merged room files, Google Calendar, Outlook, Sched, Indico, RFC 6321 xCal, Excel CSV): each is
read with counts that match the file and times in the file's zone, and its records export valid in every format.

The files are generated text (``FILES``: name -> (route, bytes, expected)); the e2e module posts the same files
through the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shared.archive.loader import load_archive
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.schedule.readers import ScheduleLimits, read_schedule
from shared.schedule.readers.archive_out import write_folder
from tests.integration.test_schedule_exports import CHECKS, SCHEDULE_FORMATS, export
from tests.support import schedule_checks as checks

LIMITS = ScheduleLimits()
G = "0b6a3f3e-1c2d-4e5f-8a9b-{:012d}"  # GUIDs of the hand-written files


@dataclass
class Expect:
    """What a file holds: counts, the event's zone, and some sessions' local wall start/end ("YYYY-MM-DDTHH:MM")."""

    sessions: int
    rooms: int
    speakers: int
    timezone: str
    times: dict[str, tuple[str, str]] = field(default_factory=dict)  # source id -> (start, end)
    warnings: set[str] = field(default_factory=set)  # codes that must be among the warnings
    no_warnings: set[str] = field(default_factory=set)  # codes that must not


# ------------------------------------------------------------------------------------------------ pretalx XML

def pretalx_xml() -> bytes:
    """pretalx's schedule.xml: tracks straight under <conference>, persons with id/guid/code, empty <abstract/>,
    <url> and <feedback_url>, <links>/<attachments>; Pacific/Auckland (+13:00 in November)."""
    def event(n, room, date, start, duration, title, persons, track="Main", abstract="<abstract/>"):
        people = "".join(f'<person id="{pid}" guid="{G.format(900 + pid)}" code="SP{pid:04d}">{name}</person>'
                         for pid, name in persons)
        return f"""
            <event guid="{G.format(n)}" id="{n}">
                <room>{room}</room>
                <title>{title}</title>
                <subtitle></subtitle>
                <type>Talk</type>
                <date>{date}T{start}:00+13:00</date>
                <start>{start}</start>
                <duration>{duration}</duration>
                {abstract}
                <slug>kiwicon-{n}-{title.lower().split()[0]}</slug>
                <track>{track}</track>
                <logo></logo>
                <persons>{people}</persons>
                <language>en</language>
                <description>Talk number {n} &amp; friends</description>
                <recording><license></license><optout>false</optout></recording>
                <links><link href="https://example.org/slides/{n}">Slides</link></links>
                <attachments><attachment href="https://pretalx.example.org/media/{n}.pdf">Paper</attachment>
                </attachments>
                <url>https://pretalx.example.org/kiwicon/talk/T{n:05d}/</url>
                <feedback_url>https://pretalx.example.org/kiwicon/talk/T{n:05d}/feedback/</feedback_url>
            </event>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<schedule>
    <generator name="pretalx" version="2024.3.1"/>
    <version>0.4</version>
    <conference>
        <acronym>kiwicon</acronym>
        <title>Kiwicon Ōtautahi</title>
        <start>2024-11-02</start>
        <end>2024-11-03</end>
        <days>2</days>
        <timeslot_duration>00:05</timeslot_duration>
        <base_url>https://pretalx.example.org/kiwicon/schedule/</base_url>
        <logo>https://pretalx.example.org/media/kiwicon/logo.png</logo>
        <time_zone_name>Pacific/Auckland</time_zone_name>
        <track name="Main" slug="1-main" color="#3fa34d"/>
        <track name="Māori &amp; Pasifika" slug="2-maori-pasifika" color="#aa3300"/>
    </conference>
    <day index="1" date="2024-11-02" start="2024-11-02T04:00:00+13:00" end="2024-11-03T03:59:00+13:00">
        <room name="Te Pae Hall" guid="{G.format(500)}">{event(1, "Te Pae Hall", "2024-11-02", "09:30", "00:45",
                                                             "Opening kōrero", [(1, "Aroha Ngata")])}{event(
            2, "Te Pae Hall", "2024-11-02", "23:30", "01:00", "Late night hacking", [(2, "Søren Ødegård"),
                                                                                  (1, "Aroha Ngata")])}
        </room>
        <room name="Room 2" guid="{G.format(501)}">{event(3, "Room 2", "2024-11-02", "10:00", "00:30",
                                                          "Ngā mihi", [(3, "李小龍")], track="Māori &amp; Pasifika",
                                                          abstract="<abstract>Short</abstract>")}
        </room>
    </day>
    <day index="2" date="2024-11-03" start="2024-11-03T04:00:00+13:00" end="2024-11-04T03:59:00+13:00">
        <room name="Te Pae Hall" guid="{G.format(500)}">{event(4, "Te Pae Hall", "2024-11-03", "11:00", "00:00",
                                                             "Lightning zero", [])}
        </room>
        <room name="Room 2" guid="{G.format(501)}"/>
    </day>
</schedule>
""".encode()


PRETALX_XML = Expect(4, 2, 3, "Pacific/Auckland", {
    "1": ("2024-11-02T09:30", "2024-11-02T10:15"), "2": ("2024-11-02T23:30", "2024-11-03T00:30"),
    "4": ("2024-11-03T11:00", "2024-11-03T11:00")}, no_warnings={"missing_element", "missing_attribute"})


# ------------------------------------------------------------------------------------------------ pentabarf 0.4

def pentabarf_04() -> bytes:
    """Pentabarf 0.4's schedule.xml: no <version>, no guids, <day_change> and durations as HH:MM:SS, <release>,
    events after midnight listed on the day before, Latin-1 declared."""
    text = """<?xml version="1.0" encoding="ISO-8859-1"?>
<schedule>
  <conference>
    <title>Chaos Hochschultage 2008</title>
    <subtitle>Überall</subtitle>
    <venue>Universität</venue>
    <city>Köln</city>
    <start>2008-03-29</start>
    <end>2008-03-30</end>
    <days>2</days>
    <release>Version 0.9 Ümlaut</release>
    <day_change>04:00:00</day_change>
    <timeslot_duration>00:15:00</timeslot_duration>
  </conference>
  <day date="2008-03-29" index="1">
    <room name="Saal 1">
      <event id="101">
        <start>11:00</start>
        <duration>01:00:00</duration>
        <room>Saal 1</room>
        <tag>eroeffnung</tag>
        <title>Eröffnung</title>
        <subtitle></subtitle>
        <track>Community</track>
        <type>lecture</type>
        <language>de</language>
        <abstract>Begrüßung</abstract>
        <description></description>
        <persons>
          <person id="7">Jürgen Müller</person>
        </persons>
        <links>
          <link href="http://www.example.de/">Homepage</link>
        </links>
      </event>
      <event id="102">
        <start>02:30</start>
        <duration>00:45:00</duration>
        <room>Saal 1</room>
        <tag>nacht</tag>
        <title>Nachtschicht</title>
        <track>Hacking</track>
        <type>workshop</type>
        <language>de</language>
        <abstract></abstract>
        <description></description>
        <persons>
          <person id="7">Jürgen Müller</person>
          <person id="8">Ångström Å</person>
        </persons>
        <links></links>
      </event>
    </room>
  </day>
  <day date="2008-03-30" index="2">
    <room name="Saal 1">
      <event id="103">
        <start>10:00</start>
        <duration>26:00:00</duration>
        <room>Saal 1</room>
        <tag>marathon</tag>
        <title>Marathon</title>
        <track>Hacking</track>
        <type>other</type>
        <language>en</language>
        <abstract></abstract>
        <description></description>
        <persons></persons>
        <links></links>
      </event>
    </room>
  </day>
</schedule>
"""
    return text.encode("iso-8859-1")


# 2008-03-30 02:00 is the spring-forward gap in Europe? No zone is named: the event is in UTC (floating times).
PENTABARF_04 = Expect(3, 1, 2, "UTC", {
    "101": ("2008-03-29T11:00", "2008-03-29T12:00"), "102": ("2008-03-30T02:30", "2008-03-30T03:15"),
    "103": ("2008-03-30T10:00", "2008-03-31T12:00")}, warnings={"missing_element", "timezone_assumed"})


FILES: dict[str, tuple[str, bytes, Expect]] = {
    "pretalx_xml": ("frab-xml", pretalx_xml(), PRETALX_XML),
    "pentabarf_04": ("pentabarf", pentabarf_04(), PENTABARF_04),
}


# ------------------------------------------------------------------------------------------------------ checks

def _hm(text: str | None) -> str | None:
    return text[:16] if text else None


def read(name: str):
    route, data, _expect = FILES[name]
    schedule = read_schedule(data, route, LIMITS)
    return schedule, schedule.records()


@pytest.mark.parametrize("name", sorted(FILES))
def test_counts_and_zone_match_the_file(name):
    schedule, recs = read(name)
    expect = FILES[name][2]
    assert (len(recs["sessions"]), len(recs["microlocations"]), len(recs["speakers"])) == \
        (expect.sessions, expect.rooms, expect.speakers), [w["message"] for w in schedule.warnings]
    assert recs["event"]["timezone"] == expect.timezone


@pytest.mark.parametrize("name", sorted(FILES))
def test_times_match_the_zone(name):
    _schedule, recs = read(name)
    got = {str(s["x-schedule"].get("source_id")): (_hm(s["start_time"]), _hm(s["end_time"]))
           for s in recs["sessions"]}
    for sid, want in FILES[name][2].times.items():
        assert got[sid] == want, sid


@pytest.mark.parametrize("name", sorted(FILES))
def test_warnings_name_what_was_repaired(name):
    schedule, _recs = read(name)
    found = {w["code"] for w in schedule.warnings}
    expect = FILES[name][2]
    assert expect.warnings <= found, schedule.warnings
    assert not expect.no_warnings & found, schedule.warnings
    for warning in schedule.warnings:
        assert warning["message"] and len(warning["message"]) < 400





@pytest.fixture(scope="module")
def db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('outside_in') / 'platform.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def loaded(db, tmp_path_factory) -> dict[str, int]:
    ids = {}
    for name in FILES:
        _schedule, recs = read(name)
        folder = write_folder(recs, tmp_path_factory.mktemp(name) / "archive")
        with db() as session:
            ids[name] = load_archive(session, folder, keep_ids=False).event_id
            session.commit()
    return ids


@pytest.mark.parametrize("fmt", SCHEDULE_FORMATS)
@pytest.mark.parametrize("name", sorted(FILES))
def test_reexport_validates(name, fmt, db, loaded):
    data = export(db, loaded[name], fmt)
    CHECKS[fmt](data)
    if fmt in ("frab-xml", "pentabarf"):
        assert len(checks.giggity_sessions(data)) == FILES[name][2].sessions
    elif fmt == "schedule-json":
        assert len(checks.fahrplan_sessions(data)) == FILES[name][2].sessions


def test_pretalx_tracks_keep_their_colours_and_speakers_their_codes():
    _schedule, recs = read("pretalx_xml")
    assert {t["name"]: t["color"] for t in recs["tracks"]} == {"Main": "#3fa34d", "Māori & Pasifika": "#aa3300"}
    assert {t["x-schedule"].get("slug") for t in recs["tracks"]} == {"1-main", "2-maori-pasifika"}
    speaker = next(p for p in recs["speakers"] if p["name"] == "李小龍")
    assert speaker["x-schedule"]["extra"]["frab-xml"]["code"] == "SP0003"
    talk = next(s for s in recs["sessions"] if s["x-schedule"]["source_id"] == 1)
    assert talk["x-schedule"]["feedback_url"].endswith("/feedback/") and talk["x-schedule"]["attachments"]


def test_pentabarf_hh_mm_ss_durations_are_hours_minutes_seconds():
    _schedule, recs = read("pentabarf_04")
    assert {s["title"]: s["session_type"]["name"] for s in recs["sessions"]}["Marathon"] == "other"
    assert {t["name"]: t["length"] for t in recs["session_types"]} == {"lecture": "01:00", "workshop": "00:45",
                                                                      "other": "26:00"}
