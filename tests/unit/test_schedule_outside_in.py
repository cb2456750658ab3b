"""Schedule files the format authors never saw, written here by hand in the shapes their producers emit (pretalx,
frab, pentabarf 0.4, merged room files, Google Calendar, Outlook, Sched, Indico, RFC 6321 xCal, Excel CSV): each is
read with counts that match the file and times in the file's zone, and its records export valid in every format.

The files are generated text (``FILES``: name -> (route, bytes, expected)); the e2e module posts the same files
through the API."""

from __future__ import annotations

import codecs
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.importer.transcode import open_upload
from shared.archive.loader import load_archive
from shared.archive.reader import ArchiveError, ArchiveLimits
from shared.schedule.readers import ScheduleLimits, detect_format, read_csv_zip, read_schedule
from shared.schedule.readers.archive_out import write_folder
from tests.integration.test_schedule_exports import CHECKS, SCHEDULE_FORMATS, export
from tests.integration.test_schedule_round_trips import canonical
from tests.support import schedule_checks as checks
from tests.support.import_helpers import zip_members

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
    def inner(*lines: str) -> str:
        return "".join(f"\n          {line}" for line in lines) + "\n        " if lines else ""

    def event(n, start, duration, tag, title, track, kind, language, persons=(), links=(), *, subtitle=False,
              abstract=""):
        return (f'      <event id="{n}">\n        <start>{start}</start>\n        <duration>{duration}</duration>\n'
                f"        <room>Saal 1</room>\n        <tag>{tag}</tag>\n        <title>{title}</title>\n"
                + ("        <subtitle></subtitle>\n" if subtitle else "")
                + f"        <track>{track}</track>\n        <type>{kind}</type>\n"
                f"        <language>{language}</language>\n        <abstract>{abstract}</abstract>\n"
                f"        <description></description>\n        <persons>{inner(*persons)}</persons>\n"
                f"        <links>{inner(*links)}</links>\n      </event>\n")

    juergen = '<person id="7">Jürgen Müller</person>'
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
""" + event(101, "11:00", "01:00:00", "eroeffnung", "Eröffnung", "Community", "lecture", "de", [juergen],
            ['<link href="http://www.example.de/">Homepage</link>'], subtitle=True, abstract="Begrüßung") \
        + event(102, "02:30", "00:45:00", "nacht", "Nachtschicht", "Hacking", "workshop", "de",
                [juergen, '<person id="8">Ångström Å</person>']) + """    </room>
  </day>
  <day date="2008-03-30" index="2">
    <room name="Saal 1">
""" + event(103, "10:00", "26:00:00", "marathon", "Marathon", "Hacking", "other", "en") + """    </room>
  </day>
</schedule>
"""
    return text.encode("iso-8859-1")


# 2008-03-30 02:00 is the spring-forward gap in Europe? No zone is named: the event is in UTC (floating times).
PENTABARF_04 = Expect(3, 1, 2, "UTC", {
    "101": ("2008-03-29T11:00", "2008-03-29T12:00"), "102": ("2008-03-30T02:30", "2008-03-30T03:15"),
    "103": ("2008-03-30T10:00", "2008-03-31T12:00")}, warnings={"missing_element", "timezone_assumed"})


# ------------------------------------------------------------------------------------------------ frab, merged

def frab_event(n, date, start, duration, title, room, persons=(), guid=None, offset="+02:00", track="Netzpolitik"):
    people = "".join(f'<person id="{pid}" guid="{G.format(700 + pid)}">{name}</person>' for pid, name in persons)
    return f"""
      <event guid="{guid or G.format(n)}" id="{n}">
        <room>{room}</room>
        <title>{title}</title>
        <subtitle/>
        <type>lecture</type>
        <date>{date}T{start}:00{offset}</date>
        <start>{start}</start>
        <duration>{duration}</duration>
        <abstract>Über {title}</abstract>
        <slug>fiffkon24-{n}-talk</slug>
        <track>{track}</track>
        <logo/>
        <persons>{people}</persons>
        <language>de</language>
        <description><![CDATA[<p>HTML & mehr</p>]]></description>
        <recording><license/><optout>false</optout></recording>
        <links/>
        <attachments/>
        <url>https://frab.example.org/de/fiffkon24/public/events/{n}</url>
        <video_download_url/>
      </event>"""


def frab_newest() -> bytes:
    """frab's current schedule.xml: <version>, the XSD's schemaLocation, day bounds past midnight, a talk after
    midnight on the day before (its <date> says the next date), one on the night the clocks go back (02:30 twice)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<schedule xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
          xsi:noNamespaceSchemaLocation="https://c3voc.de/schedule/schema.xsd">
  <generator name="frab" version="2024.10.2"/>
  <version>Nachtschicht 1.2</version>
  <conference>
    <acronym>fiffkon24</acronym>
    <title>FIfF-Konferenz 2024</title>
    <start>2024-10-26</start>
    <end>2024-10-27</end>
    <days>2</days>
    <timeslot_duration>00:15</timeslot_duration>
    <base_url>https://frab.example.org/de/fiffkon24/public/</base_url>
    <time_zone_name>Europe/Berlin</time_zone_name>
    <track name="Netzpolitik" color="#ff0000" slug="netzpolitik"/>
  </conference>
  <day index="1" date="2024-10-26" start="2024-10-26T10:00:00+02:00" end="2024-10-27T04:00:00+01:00">
    <room name="Großer Saal" guid="{G.format(600)}">{frab_event(201, "2024-10-26", "10:00", "00:45", "Datenschutz",
                                                              "Großer Saal", [(1, "Anna Ässler")])}{frab_event(
        202, "2024-10-27", "00:30", "01:30", "Mitternachtsvortrag", "Großer Saal", [(2, "Bob O'Brien &amp; Co")])}{
        frab_event(203, "2024-10-27", "02:30", "00:30", "Zweimal halb drei", "Großer Saal", offset="+01:00")}
    </room>
  </day>
  <day index="2" date="2024-10-27" start="2024-10-27T10:00:00+01:00" end="2024-10-27T18:00:00+01:00">
    <room name="Großer Saal" guid="{G.format(600)}">{frab_event(204, "2024-10-27", "10:00", "00:00", "Null Minuten",
                                                              "Großer Saal", [(1, "Anna Ässler")], offset="+01:00")}
    </room>
  </day>
</schedule>
""".encode()


FRAB_NEWEST = Expect(4, 1, 2, "Europe/Berlin", {
    "201": ("2024-10-26T10:00", "2024-10-26T10:45"), "202": ("2024-10-27T00:30", "2024-10-27T02:00"),
    "203": ("2024-10-27T02:30", "2024-10-27T03:00"), "204": ("2024-10-27T10:00", "2024-10-27T10:00")},
    no_warnings={"missing_element", "missing_attribute", "timezone_assumed"})


def merged_rooms() -> bytes:
    """Two rooms' schedule.xml files pasted into one: each day twice (once per room), one talk copied into both
    (same id, same guid), and two different talks that share id 301 (each file numbered its own)."""
    day = '<day index="{i}" date="2024-06-0{i}" start="2024-06-0{i}T09:00:00+02:00" end="2024-06-0{i}T18:00:00+02:00">'
    shared = frab_event(310, "2024-06-01", "12:00", "00:30", "Gemeinsame Keynote", "Saal A", [(9, "Keynote")])
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<schedule>
  <version>merged</version>
  <conference><acronym>mrg24</acronym><title>Merged 2024</title><start>2024-06-01</start><end>2024-06-02</end>
    <days>2</days><timeslot_duration>00:15</timeslot_duration><time_zone_name>Europe/Vienna</time_zone_name>
  </conference>
  {day.format(i=1)}<room name="Saal A">{frab_event(301, "2024-06-01", "10:00", "00:30", "A eins", "Saal A",
                                                     [(1, "Ana")], guid=G.format(3011))}{shared}</room></day>
  {day.format(i=2)}<room name="Saal A">{frab_event(302, "2024-06-02", "10:00", "00:30", "A zwei", "Saal A",
                                                     [(1, "Ana")])}</room></day>
  {day.format(i=1)}<room name="Saal A">{shared}</room>
  <room name="Saal B">{frab_event(301, "2024-06-01", "10:00", "00:45", "B eins", "Saal B",
                                                     [(2, "Ben")], guid=G.format(3012))}</room></day>
  {day.format(i=2)}<room name="Saal B">{frab_event(303, "2024-06-02", "11:00", "00:30", "B zwei", "Saal B",
                                                     [(2, "Ben"), (1, "Ana")])}</room></day>
</schedule>
""".encode()


MERGED = Expect(5, 2, 3, "Europe/Vienna", {"302": ("2024-06-02T10:00", "2024-06-02T10:30")},
                warnings={"duplicate_session", "id_reassigned"})


def no_zone_name(offsets: tuple[str, str], dates: tuple[str, str], acronym: str) -> bytes:
    """A schedule.xml with offsets on every <date> but no <time_zone_name> (older frab, hand-made files)."""
    events = "".join(frab_event(900 + n, date, "10:00", "01:00", f"Talk {n}", "Hall", offset=offset)
                     for n, (date, offset) in enumerate(zip(dates, offsets, strict=True)))
    return (f"<schedule><version>1</version><conference><acronym>{acronym}</acronym><title>{acronym}</title>"
            f"</conference><day index='1' date='{dates[0]}'><room name='Hall'>{events}</room></day></schedule>"
            ).encode()


NO_ZONE_DST = Expect(2, 1, 0, "Europe/Berlin", {"900": ("2024-10-26T10:00", "2024-10-26T11:00"),
                                                "901": ("2024-10-28T10:00", "2024-10-28T11:00")},
                     warnings={"timezone_from_offset"}, no_warnings={"timezone_assumed"})
NO_ZONE_INDIA = Expect(2, 1, 0, "Asia/Kolkata", {"900": ("2024-12-01T10:00", "2024-12-01T11:00")},
                       warnings={"timezone_from_offset"}, no_warnings={"timezone_assumed"})


def unicode_everywhere() -> bytes:
    """Non-ASCII in every field: acronym, slugs, ids, rooms, tracks, types, languages, persons (RTL, combining marks,
    astral emoji), a title of 2,500 characters, a zero-width joiner sequence."""
    long_title = "Ü" * 2500
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<schedule><version>ünï</version>
  <conference><acronym>ñandú-2025</acronym><title>Конференция 🦜 مؤتمر</title><start>2025-03-01</start>
    <end>2025-03-01</end><time_zone_name>America/Argentina/Buenos_Aires</time_zone_name>
    <track name="Ética &amp; 数据" color="#123abc" slug="ética-数据"/></conference>
  <day index="1" date="2025-03-01" start="2025-03-01T09:00:00-03:00" end="2025-03-01T20:00:00-03:00">
    <room name="Sala 🦙 «Ñ»" guid="{G.format(530)}">
      <event guid="{G.format(531)}" id="ñ-1"><date>2025-03-01T10:00:00-03:00</date><start>10:00</start>
        <duration>00:40</duration><room>Sala 🦙 «Ñ»</room><slug>ñandú-ñ-1-título</slug><title>Título 👩‍💻 עברית</title>
        <subtitle>ثانوي</subtitle><track>Ética &amp; 数据</track><type>Ponencia ✨</type><language>es-AR</language>
        <abstract>Résumé naïve ℌ𝔢𝔩𝔩𝔬</abstract><description>é combining</description>
        <persons><person id="1" guid="{G.format(532)}">José Ñúñez</person>
          <person id="2" guid="{G.format(533)}">محمد</person></persons>
        <links><link href="https://example.org/ñ">Enlace ñ</link></links></event>
      <event guid="{G.format(534)}" id="2"><date>2025-03-01T11:00:00-03:00</date><start>11:00</start>
        <duration>00:20</duration><room>Sala 🦙 «Ñ»</room><title>{long_title}</title><type>Ponencia ✨</type>
        <persons><person id="2" guid="{G.format(533)}">محمد</person></persons></event>
    </room>
  </day>
</schedule>
""".encode()


UNICODE = Expect(2, 1, 2, "America/Argentina/Buenos_Aires", {"ñ-1": ("2025-03-01T10:00", "2025-03-01T10:40")},
                 warnings={"value_shortened"})


def giggity_variant() -> bytes:
    """What hand-made files for Giggity look like: UTF-16 with a BOM and CRLF, no <version>, no guids, no
    <date>, <start> with seconds, char references for emoji, a zone far from UTC with a half hour (St John's)."""
    text = """<?xml version="1.0" encoding="UTF-16"?>\r
<schedule>\r
  <conference><title>Hackerspace Night &#x1F680;</title><start>2024-07-05</start><end>2024-07-06</end>\r
    <time_zone_name>America/St_Johns</time_zone_name><day_change>05:00</day_change></conference>\r
  <day index="1" date="2024-07-05">\r
    <room name="Main room">\r
      <event id="1"><start>19:00:00</start><duration>0:45</duration><title>Opening &#x1F389;\ttabs</title>\r
        <persons><person id="1">Zoë</person></persons></event>\r
      <event id="2"><start>04:30</start><duration>1:00</duration><title>Sunrise</title>\r
        <persons><person id="1">Zoë</person></persons></event>\r
    </room>\r
  </day>\r
</schedule>\r
"""
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")


GIGGITY = Expect(2, 1, 1, "America/St_Johns", {"1": ("2024-07-05T19:00", "2024-07-05T19:45"),
                                               "2": ("2024-07-06T04:30", "2024-07-06T05:30")},
                 warnings={"missing_element", "missing_attribute"})


# ------------------------------------------------------------------------------------------------------ iCal

def fold_octets(line: str) -> bytes:
    """A content line folded every 75 octets, mid-character where it falls so (RFC 5545 allows it; readers must
    unfold before decoding)."""
    raw = line.encode("utf-8")
    parts = [raw[:75]] + [raw[i:i + 74] for i in range(75, len(raw), 74)]
    return b"\r\n ".join(parts)


def ical(lines: list[str]) -> bytes:
    return b"\r\n".join(fold_octets(line) for line in lines) + b"\r\n"


ST_JOHNS_VTIMEZONE = [
    "BEGIN:VTIMEZONE", "TZID:America/St_Johns", "X-LIC-LOCATION:America/St_Johns",
    "BEGIN:DAYLIGHT", "TZOFFSETFROM:-0330", "TZOFFSETTO:-0230", "TZNAME:NDT", "DTSTART:19700308T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU", "END:DAYLIGHT",
    "BEGIN:STANDARD", "TZOFFSETFROM:-0230", "TZOFFSETTO:-0330", "TZNAME:NST", "DTSTART:19701101T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU", "END:STANDARD", "END:VTIMEZONE"]


def google_calendar() -> bytes:
    """Google Calendar's export: X-WR-TIMEZONE, a VTIMEZONE, attendees, escaped text, an all-day entry, DURATION
    instead of DTEND, a talk across midnight and the DST change (St John's, -02:30 -> -03:30 on 2024-11-03), a
    daily recurring event (COUNT=3) with one instance moved, folded UTF-8 lines split mid-character."""
    def vevent(uid, start, end, summary, *more):
        return ["BEGIN:VEVENT", f"DTSTART{start}", *([f"DTEND{end}"] if end else []), "DTSTAMP:20241020T101010Z",
                f"UID:{uid}@google.com", "CREATED:20241001T090000Z", "LAST-MODIFIED:20241001T090000Z",
                "SEQUENCE:0", "STATUS:CONFIRMED", f"SUMMARY:{summary}", "TRANSP:OPAQUE", *more, "END:VEVENT"]
    tz = ";TZID=America/St_Johns:"
    return ical([
        "BEGIN:VCALENDAR", "PRODID:-//Google Inc//Google Calendar 70.9054//EN", "VERSION:2.0", "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH", "X-WR-CALNAME:DevFest Ktaqmkuk 2024", "X-WR-TIMEZONE:America/St_Johns",
        "X-WR-CALDESC:Talks\\, workshops\\; and a screech-in", *ST_JOHNS_VTIMEZONE,
        *vevent("g1", tz + "20241102T093000", tz + "20241102T103000", "Keynote: Café ☕ and cod\\, really",
                "DESCRIPTION:Ein Vortrag über Kaffee ☕ und Kabeljau — 日本語のテキストも少しあります。"
                "Très long pour que la ligne soit pliée au milieu d’un caractère multioctet.",
                "LOCATION:Hall A\\, Level 2",
                "ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Siobhán Ó Briain;"
                "X-NUM-GUESTS=0:mailto:siobhan@example.com",
                "ORGANIZER;CN=DevFest:mailto:devfest@example.com"),
        *vevent("g2", tz + "20241102T233000", tz + "20241103T013000", "Night owls across the DST change",
                "LOCATION:Hall A\\, Level 2"),
        *vevent("g3", tz + "20241102T140000", None, "Workshop; bring a laptop", "DURATION:PT1H30M",
                "LOCATION:Room 1"),
        *vevent("g4", ";VALUE=DATE:20241102", ";VALUE=DATE:20241103", "Registration desk open"),
        *vevent("g5", tz + "20241102T080000", tz + "20241102T083000", "Morning coffee",
                "RRULE:FREQ=DAILY;COUNT=3", "LOCATION:Foyer"),
        "BEGIN:VEVENT", "DTSTART" + tz + "20241103T090000", "DTEND" + tz + "20241103T093000",
        "DTSTAMP:20241020T101010Z", "UID:g5@google.com", "RECURRENCE-ID" + tz + "20241103T080000",
        "SUMMARY:Morning coffee (late\\, Sunday)", "LOCATION:Foyer", "END:VEVENT",
        "END:VCALENDAR"])


GOOGLE = Expect(7, 3, 1, "America/St_Johns", {
    "g1": ("2024-11-02T09:30", "2024-11-02T10:30"), "g2": ("2024-11-02T23:30", "2024-11-03T01:30"),
    "g3": ("2024-11-02T14:00", "2024-11-02T15:30"), "g4": ("2024-11-02T00:00", "2024-11-03T00:00"),
    "g5/20241102T080000": ("2024-11-02T08:00", "2024-11-02T08:30"),
    "g5/20241103T080000": ("2024-11-03T09:00", "2024-11-03T09:30"),  # the moved instance (RECURRENCE-ID)
    "g5/20241104T080000": ("2024-11-04T08:00", "2024-11-04T08:30")},
    warnings={"recurrence_expanded"}, no_warnings={"unknown_timezone", "id_reassigned", "bad_encoding"})


def outlook() -> bytes:
    """Outlook's export: Windows zone names (quoted TZID), a 1601 VTIMEZONE, LANGUAGE on SUMMARY, opaque UIDs."""
    vtz = ["BEGIN:VTIMEZONE", "TZID:W. Europe Standard Time",
           "BEGIN:STANDARD", "DTSTART:16011028T030000", "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10",
           "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "END:STANDARD",
           "BEGIN:DAYLIGHT", "DTSTART:16010325T020000", "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3",
           "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200", "END:DAYLIGHT", "END:VTIMEZONE"]

    def vevent(n, start, end, summary, room):
        return ["BEGIN:VEVENT", "CLASS:PUBLIC", "CREATED:20240501T080000Z",
                "DESCRIPTION:Agenda\\n- Punkt 1\\n- Punkt 2\\n", f'DTEND;TZID="W. Europe Standard Time":{end}',
                "DTSTAMP:20240601T120000Z", f'DTSTART;TZID="W. Europe Standard Time":{start}',
                "LAST-MODIFIED:20240501T080000Z", f"LOCATION:{room}", "PRIORITY:5", "SEQUENCE:0",
                f"SUMMARY;LANGUAGE=de:{summary}", "TRANSP:OPAQUE",
                f"UID:040000008200E00074C5B7101A82E0080000000010{n:04d}D2C3A2DA01000000000000000010000000",
                "X-MICROSOFT-CDO-BUSYSTATUS:BUSY", "X-MICROSOFT-CDO-IMPORTANCE:1", "END:VEVENT"]
    return ical(["BEGIN:VCALENDAR", "PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN", "VERSION:2.0",
                 "METHOD:PUBLISH", "X-MS-OLK-FORCEINSPECTOROPEN:TRUE", *vtz,
                 *vevent(1, "20240615T100000", "20240615T113000", "Planung Sommerfest", "Konferenzraum 1"),
                 *vevent(2, "20240116T090000", "20240116T100000", "Jahresauftakt", "Konferenzraum 2"),
                 "END:VCALENDAR"])


OUTLOOK_IDS = [f"040000008200E00074C5B7101A82E0080000000010{n:04d}D2C3A2DA01000000000000000010000000"
               for n in (1, 2)]
OUTLOOK = Expect(2, 2, 0, "Europe/Berlin", {
    OUTLOOK_IDS[0]: ("2024-06-15T10:00", "2024-06-15T11:30"), OUTLOOK_IDS[1]: ("2024-01-16T09:00", "2024-01-16T10:00")})


def custom_tzid() -> bytes:
    """A calendar tool's own TZID over real rules (Central European with its DST changes), quoted because of the
    comma, and no X-WR-TIMEZONE: the zone must come from the VTIMEZONE's rules, summer and winter."""
    tzid = "(UTC+01:00) Amsterdam, Berlin, Bern, Rom, Stockholm, Wien"
    vtz = ["BEGIN:VTIMEZONE", f"TZID:{tzid}",
           "BEGIN:DAYLIGHT", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200", "TZNAME:CEST", "DTSTART:19700329T020000",
           "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "END:DAYLIGHT",
           "BEGIN:STANDARD", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "TZNAME:CET", "DTSTART:19701025T030000",
           "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "END:STANDARD", "END:VTIMEZONE"]
    events = []
    for n, (start, end) in enumerate([("20240704T180000", "20240704T193000"), ("20241205T180000",
                                                                             "20241205T190000")], 1):
        events += ["BEGIN:VEVENT", f"UID:stammtisch-{n}@verein.example", "DTSTAMP:20240101T000000Z",
                   f'DTSTART;TZID="{tzid}":{start}', f'DTEND;TZID="{tzid}":{end}', f"SUMMARY:Stammtisch {n}",
                   "LOCATION:Vereinsheim", "END:VEVENT"]
    return ical(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Vereinsverwaltung//DE", *vtz, *events,
                 "END:VCALENDAR"])


CUSTOM_TZID = Expect(2, 1, 0, "Europe/Berlin", {"stammtisch-1": ("2024-07-04T18:00", "2024-07-04T19:30"),
                                                "stammtisch-2": ("2024-12-05T18:00", "2024-12-05T19:00")},
                     warnings={"unknown_timezone"})


def sched_ics() -> bytes:
    """Sched's feed: UTC times, CATEGORIES, URL, X-WR-CALNAME, LF line endings (it is served so at times)."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Sched.com Open Source Summit 2024//EN",
             "X-WR-CALNAME:Open Source Summit Japan 2024", "X-WR-TIMEZONE:Asia/Tokyo"]
    for n, (start, end) in enumerate([("20241028T010000Z", "20241028T014000Z"),
                                      ("20241028T150000Z", "20241028T160000Z")], 1):
        lines += ["BEGIN:VEVENT", "DTSTAMP:20241001T000000Z", f"DTSTART:{start}", f"DTEND:{end}",
                  f"SUMMARY:Session {n}: コンテナ入門", "CATEGORIES:Cloud Native,Kubernetes",
                  "DESCRIPTION:Speakers: 山田太郎\\, Jane Doe", "LOCATION:Room 101 (Level 1)",
                  f"URL:https://osssummitjapan2024.sched.com/event/1abc{n}",
                  f"UID:SCHED-1abc{n}@osssummitjapan2024.sched.com", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return ("\n".join(lines) + "\n").encode()


SCHED = Expect(2, 1, 0, "Asia/Tokyo", {"SCHED-1abc1": ("2024-10-28T10:00", "2024-10-28T10:40"),
                                       "SCHED-1abc2": ("2024-10-29T00:00", "2024-10-29T01:00")})


def indico_ics() -> bytes:
    """Indico's event export: UTC times, contribution UIDs, URL in DESCRIPTION and URL."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//CERN//INDICO//EN"]
    for n, (start, end) in enumerate([("20240902T070000Z", "20240902T073000Z"),
                                      ("20240902T073000Z", "20240902T080000Z"),
                                      ("20240903T220000Z", "20240903T230000Z")], 1):
        lines += ["BEGIN:VEVENT", f"SUMMARY:Contribution {n} – Higgs \\; friends", f"DTSTART:{start}",
                  f"DTEND:{end}", "DTSTAMP:20240801T000000Z", f"UID:indico-contribution-{1400 + n}@indico.cern.ch",
                  "DESCRIPTION:https://indico.cern.ch/event/1234/contributions/14{n:02d}/",
                  f"URL:https://indico.cern.ch/event/1234/contributions/14{n:02d}/",
                  "LOCATION:500/1-001 - Main Auditorium (CERN)", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return ical(lines)


INDICO = Expect(3, 1, 0, "UTC", {"indico-contribution-1401": ("2024-09-02T07:00", "2024-09-02T07:30")})


def xcal_rfc6321() -> bytes:
    """RFC 6321 xCal: <properties>/<components>, typed values, TZID parameter, DURATION, two categories."""
    def vevent(n, start, summary, duration, room, cn):
        return f"""<vevent><properties>
        <dtstamp><date-time>2024-03-01T00:00:00Z</date-time></dtstamp>
        <dtstart><parameters><tzid><text>America/St_Johns</text></tzid></parameters>
          <date-time>{start}</date-time></dtstart>
        <duration><duration>{duration}</duration></duration>
        <uid><text>{G.format(n)}@xcal.example.org</text></uid>
        <summary><text>{summary}</text></summary>
        <location><text>{room}</text></location>
        <categories><text>Talk</text><text>Science</text></categories>
        <attendee><parameters><cn><text>{cn}</text></cn></parameters>
          <cal-address>mailto:a{n}@example.org</cal-address></attendee>
      </properties></vevent>"""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<icalendar xmlns="urn:ietf:params:xml:ns:icalendar-2.0">
 <vcalendar>
  <properties>
   <prodid><text>-//Example//xCal 1.0//EN</text></prodid>
   <version><text>2.0</text></version>
   <x-wr-calname><text>Ocean Science Day</text></x-wr-calname>
  </properties>
  <components>
   {vevent(31, "2024-03-10T01:30:00", "Before the change", "PT1H", "Aula", "Émilie Dubé")}
   {vevent(32, "2024-03-10T03:30:00", "After the change", "PT45M", "Aula", "Niels Bohr")}
   {vevent(33, "2024-03-11T23:00:00", "Late &amp; long", "P1DT2H", "Lab 2", "Émilie Dubé")}
  </components>
 </vcalendar>
</icalendar>
""".encode()


XCAL = Expect(3, 2, 2, "America/St_Johns", {
    G.format(31): ("2024-03-10T01:30", "2024-03-10T03:30"), G.format(32): ("2024-03-10T03:30", "2024-03-10T04:15"),
    G.format(33): ("2024-03-11T23:00", "2024-03-13T01:00")}, no_warnings={"unknown_timezone"})


# ------------------------------------------------------------------------------------------------ JSON

def pretalx_json() -> bytes:
    """pretalx's schedule.json (C3VOC v1 with pretalx's keys): rooms and tracks lists, persons with code, name,
    avatar, biography; St John's (-02:30 in summer); a talk that crosses midnight."""
    def talk(n, date, start, duration, room, persons):
        return {"guid": G.format(800 + n), "code": f"T{n:04d}X", "id": n, "logo": None,
                "date": f"{date}T{start}:00-02:30", "start": start, "duration": duration, "room": room,
                "slug": f"nlcon-{n}-talk", "url": f"https://pretalx.example.org/nlcon/talk/T{n:04d}X/",
                "title": f"Talk {n} — “quoted”", "subtitle": "", "track": "Ocean", "type": "Talk",
                "language": "en", "abstract": "", "description": None, "recording_license": "",
                "do_not_record": n == 2, "persons": persons, "links": [], "attachments": [],
                "feedback_url": f"https://pretalx.example.org/nlcon/talk/T{n:04d}X/feedback/",
                "origin_url": f"https://pretalx.example.org/nlcon/talk/T{n:04d}X/", "answers": []}
    jane = {"code": "JANE01", "name": "Jane Ó Dúill", "avatar": None, "biography": "Bio ☃",
            "public_name": "Jane Ó Dúill", "guid": G.format(951), "url": "https://pretalx.example.org/speaker/J/"}
    raj = {"code": "RAJ002", "name": "Rāj", "avatar": "https://pretalx.example.org/media/raj.png", "biography": None,
           "public_name": "Rāj", "guid": G.format(952), "url": "https://pretalx.example.org/speaker/R/"}
    doc = {"$schema": "https://c3voc.de/schedule/schema.json",
           "generator": {"name": "pretalx", "version": "2024.3.1"},
           "schedule": {"url": "https://pretalx.example.org/nlcon/schedule/", "version": "0.3",
                        "base_url": "https://pretalx.example.org",
                        "conference": {"acronym": "nlcon", "title": "NL Con", "start": "2024-07-05",
                                       "end": "2024-07-06", "daysCount": 2, "timeslot_duration": "00:05",
                                       "time_zone_name": "America/St_Johns", "colors": {"primary": "#224466"},
                                       "rooms": [{"name": "Ocean Hall", "slug": "1-ocean", "guid": G.format(520),
                                                  "description": None, "capacity": 300}],
                                       "tracks": [{"name": "Ocean", "slug": "1-ocean", "color": "#0055aa"}],
                                       "days": [
                                           {"index": 1, "date": "2024-07-05", "day_start": "2024-07-05T04:00:00-02:30",
                                            "day_end": "2024-07-06T03:59:00-02:30", "rooms": {"Ocean Hall": [
                                                talk(1, "2024-07-05", "10:00", "00:30", "Ocean Hall", [jane]),
                                                talk(2, "2024-07-05", "23:45", "01:00", "Ocean Hall", [jane, raj]),
                                            ]}},
                                           {"index": 2, "date": "2024-07-06", "day_start": "2024-07-06T04:00:00-02:30",
                                            "day_end": "2024-07-07T03:59:00-02:30", "rooms": {"Ocean Hall": []}}]}}}
    return json.dumps(doc, ensure_ascii=False, indent=1).encode()


PRETALX_JSON = Expect(2, 1, 2, "America/St_Johns", {"1": ("2024-07-05T10:00", "2024-07-05T10:30"),
                                                    "2": ("2024-07-05T23:45", "2024-07-06T00:45")})


def pretalx_widget() -> bytes:
    """pretalx's widget data (``/schedule/widgets/schedule.json``): talks, rooms, tracks, speakers as flat lists
    joined by ids and codes, names as language dicts, breaks without a code (not talks)."""
    doc = {
        "version": "0.7", "timezone": "Pacific/Auckland", "event_start": "2025-01-20", "event_end": "2025-01-21",
        "talks": [
            {"code": "ABC123", "id": 41, "title": "Kia ora, widget", "abstract": "Short",
             "speakers": ["SPK001"], "track": 3, "start": "2025-01-20T09:00:00+13:00",
             "end": "2025-01-20T09:40:00+13:00", "room": 5, "duration": 40, "updated": "2025-01-01T00:00:00+00:00",
             "state": None, "do_not_record": False},
            {"code": "DEF456", "id": 42, "title": {"en": "Night talk", "mi": "Kōrero pō"}, "abstract": None,
             "speakers": ["SPK001", "SPK002"], "track": None, "start": "2025-01-20T23:30:00+13:00",
             "end": "2025-01-21T00:30:00+13:00", "room": 6, "duration": 60, "updated": None, "state": "confirmed",
             "do_not_record": True},
            {"id": 90, "title": {"en": "Morning tea"}, "start": "2025-01-20T10:00:00+13:00",
             "end": "2025-01-20T10:20:00+13:00", "room": 5, "duration": 20}],
        "tracks": [{"id": 3, "name": {"en": "Main track"}, "description": {}, "color": "#00aa44"}],
        "rooms": [{"id": 5, "name": {"en": "Whare"}, "description": {}}, {"id": 6, "name": "Room 6",
                                                                        "description": None}],
        "speakers": [{"code": "SPK001", "name": "Tama Ngata", "biography": "Kia ora", "avatar": None},
                     {"code": "SPK002", "name": "Émile", "biography": None,
                      "avatar": "https://pretalx.example.org/media/emile.jpg"}],
    }
    return json.dumps(doc).encode()


WIDGET = Expect(2, 2, 2, "Pacific/Auckland", {"ABC123": ("2025-01-20T09:00", "2025-01-20T09:40"),
                                              "DEF456": ("2025-01-20T23:30", "2025-01-21T00:30")})


# ------------------------------------------------------------------------------------------------ CSV

def excel_de_csv() -> bytes:
    """Our CSV zip after a round through German Excel: Windows-1252, semicolons, CRLF, dates rewritten as
    DD.MM.YYYY HH:MM (offsets gone), a cell with a line break and a semicolon, folder inside the zip."""
    sessions = ("id;guid;title;subtitle;state;date;start;end;duration;room;track;type;language;speakers;"
                "speaker_ids;short_abstract;long_abstract;slides;video;audio;signup_url;event;timezone\r\n"
                f"1;{G.format(61)};Begrüßung;;accepted;15.06.2024;15.06.2024 10:00;15.06.2024 10:30;00:30;Aula;"
                "Allgemein;Vortrag;de;Jörg Dürr;1;Kurz;\"Zeile 1\r\nZeile 2; mit Semikolon\";;;;;Sommerfest 2024;"
                "Europe/Berlin\r\n"
                f"2;{G.format(62)};Nachtcafé;;accepted;15.06.2024;15.06.2024 23:30;16.06.2024 00:30;01:00;Café;"
                "Allgemein;Workshop;de;\"Jörg Dürr; Ilse Weiß\";1 2;;;;;;;Sommerfest 2024;Europe/Berlin\r\n")
    speakers = ("id;guid;name;email;organisation;position;country;city;website;twitter;github;linkedin;facebook;"
                "short_biography;long_biography;session_ids\r\n"
                f"1;{G.format(161)};Jörg Dürr;joerg@example.de;Verein für Öffentlichkeit;;;Köln;;;;;;;;1 2\r\n"
                f"2;{G.format(162)};Ilse Weiß;;;;;;;;;;;;;2\r\n")
    return zip_members({"sommerfest/sessions.csv": sessions.encode("cp1252"),
                 "sommerfest/speakers.csv": speakers.encode("cp1252")})


EXCEL_DE = Expect(2, 2, 2, "Europe/Berlin", {"1": ("2024-06-15T10:00", "2024-06-15T10:30"),
                                             "2": ("2024-06-15T23:30", "2024-06-16T00:30")},
                  no_warnings={"invalid_value"})


def excel_us_csv() -> bytes:
    """A hand-made sessions sheet saved by US Excel as "CSV UTF-8": BOM, commas, CRLF, M/D/YYYY H:MM times, a
    zone column far from UTC, no speakers.csv, the file named Sessions.CSV."""
    rows = ("\ufeffTitle,Start,End,Room,Speakers,Timezone,Event\r\n"
            "Kick-off,7/4/2024 9:00,7/4/2024 9:30,Main,\"Lee, Ann\",Pacific/Auckland,Winter Fest\r\n"
            "Long night,7/4/2024 22:00,7/5/2024 1:15,Main,Bo; Cy,Pacific/Auckland,Winter Fest\r\n"
            ",,,,,,\r\n")
    return zip_members({"Sessions.CSV": rows.encode("utf-8")})


EXCEL_US = Expect(2, 1, 3, "Pacific/Auckland", {"Kick-off": ("2024-07-04T09:00", "2024-07-04T09:30"),
                                                "Long night": ("2024-07-04T22:00", "2024-07-05T01:15")},
                  warnings={"spreadsheet_dates"})




def ten_thousand() -> bytes:
    """10,000 talks over 5 days and 20 rooms in Asia/Kathmandu (+05:45), each with two of 3,000 speakers."""
    days = []
    for d in range(5):
        date = f"2025-02-{10 + d:02d}"
        rooms = []
        for r in range(20):
            events = "".join(frab_event(
                d * 2000 + r * 100 + i, date, f"{8 + i // 7:02d}:{(i % 7) * 8:02d}", "00:08", f"Talk {d}-{r}-{i} ✓",
                f"Room {r}", [((d * 2000 + r * 100 + i) % 3000, f"Speaker {(d * 2000 + r * 100 + i) % 3000}"),
                              ((d * 2000 + r * 100 + i + 7) % 3000, f"Speaker {(d * 2000 + r * 100 + i + 7) % 3000}")],
                offset="+05:45") for i in range(100))
            rooms.append(f'<room name="Room {r}">{events}</room>')
        days.append(f'<day index="{d + 1}" date="{date}" start="{date}T08:00:00+05:45" end="{date}T23:00:00+05:45">'
                    + "".join(rooms) + "</day>")
    return ("<?xml version='1.0' encoding='utf-8'?><schedule><version>10k</version><conference><acronym>big25"
            "</acronym><title>Big Conference</title><start>2025-02-10</start><end>2025-02-14</end>"
            "<time_zone_name>Asia/Kathmandu</time_zone_name></conference>" + "".join(days) + "</schedule>").encode()


TEN_THOUSAND = Expect(10_000, 20, 3_000, "Asia/Kathmandu", {"4999": ("2025-02-12T22:08", "2025-02-12T22:16")})


# ------------------------------------------------------------------------------------------------ attacks

def _frab(title: str) -> bytes:
    return (f"<schedule><version>1</version><conference><title>{title}</title></conference>"
            "<day index='1' date='2024-01-01'/></schedule>").encode()


ATTACKS: dict[str, tuple[str, bytes, set[str]]] = {
    "empty": ("frab-xml", b"", {"empty_archive"}),
    "whitespace_ics": ("ical", b"  \r\n\t \r\n", {"empty_archive"}),
    "huge_title": ("frab-xml", _frab("A" * 1_500_000), {"text_too_long"}),
    "huge_ical_line": ("ical", ical(["BEGIN:VCALENDAR", "BEGIN:VEVENT", "DTSTART:20240101T100000Z",
                                     "SUMMARY:" + "ß" * 1_200_000, "END:VEVENT", "END:VCALENDAR"]), {"text_too_long"}),
    "huge_json_string": ("schedule-json", json.dumps({"schedule": {"conference": {"title": "x" * 1_500_000}}})
                         .encode(), {"text_too_long"}),
    "deep_json": ("schedule-json", b'{"schedule":' + b"[" * 100_000 + b"]" * 100_000 + b"}", {"too_deep"}),
    "deep_xcal": ("xcal", b"<icalendar><vcalendar>" + b"<x>" * 500 + b"</x>" * 500 + b"</vcalendar></icalendar>",
                  {"too_deep"}),
    "parameter_entity": ("frab-xml", b'<?xml version="1.0"?><!DOCTYPE schedule [<!ENTITY % p "<!ENTITY x \'y\'>">'
                         b" %p;]><schedule><conference><title>&x;</title></conference></schedule>",
                         {"xml_entities"}),
    "padded_billion_laughs": ("frab-xml", b'<?xml version="1.0"?>' + b"<!-- " + b"pad " * 2000 + b"-->"
                              b'<!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                              b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><schedule><conference><title>&c;'
                              b"</title></conference></schedule>", {"xml_entities"}),
    "utf16_xxe": ("frab-xml", codecs.BOM_UTF16_LE + '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE s [<!ENTITY x '
                  'SYSTEM "file:///etc/passwd">]><schedule><conference><title>&x;</title></conference></schedule>'
                  .encode("utf-16-le"), {"xml_external_reference"}),
    "random_zip_as_xml": ("frab-xml", zip_members({"readme.txt": b"hello", "photo.jpg": b"\xff\xd8\xff"}),
                          {"missing_file"}),
}
UPLOAD_NAMES = {"excel_us_csv": "schedule.xml", "ics_posted_as_xml": "schedule.xml",
                "json_posted_as_ics": "schedule.ics", "random_zip_as_xml": "schedule.xml", "google": "basic.ics",
                "pretalx_widget": "schedule.json", "excel_de_csv": "sommerfest.zip", "outlook": "Kalender.ics"}


FILES: dict[str, tuple[str, bytes, Expect]] = {
    "pretalx_xml": ("frab-xml", pretalx_xml(), PRETALX_XML),
    "pentabarf_04": ("pentabarf", pentabarf_04(), PENTABARF_04),
    "frab_newest": ("frab-xml", frab_newest(), FRAB_NEWEST),
    "merged_rooms": ("frab-xml", merged_rooms(), MERGED),
    "giggity_variant": ("frab-xml", giggity_variant(), GIGGITY),
    "unicode_everywhere": ("frab-xml", unicode_everywhere(), UNICODE),
    "no_zone_dst": ("frab-xml", no_zone_name(("+02:00", "+01:00"), ("2024-10-26", "2024-10-28"), "dst24"),
                    NO_ZONE_DST),
    "no_zone_india": ("frab-xml", no_zone_name(("+05:30", "+05:30"), ("2024-12-01", "2024-12-02"), "in24"),
                      NO_ZONE_INDIA),
    "pretalx_json": ("schedule-json", pretalx_json(), PRETALX_JSON),
    "pretalx_widget": ("schedule-json", pretalx_widget(), WIDGET),
    "excel_de_csv": ("csv", excel_de_csv(), EXCEL_DE),
    "excel_us_csv": ("frab-xml", excel_us_csv(), EXCEL_US),  # a zip posted as XML
    "ten_thousand": ("frab-xml", ten_thousand(), TEN_THOUSAND),
    "google": ("ical", google_calendar(), GOOGLE),
    "custom_tzid": ("ical", custom_tzid(), CUSTOM_TZID),
    "ics_posted_as_xml": ("frab-xml", indico_ics(), INDICO),  # wrong route and extension: read by content
    "json_posted_as_ics": ("ical", pretalx_json(), PRETALX_JSON),
    "outlook": ("ical", outlook(), OUTLOOK),
    "sched": ("ical", sched_ics(), SCHED),
    "indico": ("ical", indico_ics(), INDICO),
    "xcal_rfc6321": ("xcal", xcal_rfc6321(), XCAL),
}


# ------------------------------------------------------------------------------------------------------ checks

def _key(session: dict) -> str:
    """How ``Expect.times`` names a session: its id in the file, else its title."""
    sid = session["x-schedule"].get("source_id")
    return str(sid) if sid is not None else session["title"]


def _hm(text: str | None) -> str | None:
    return text[:16] if text else None


def read_bytes(data: bytes, route: str, tmp: Path):
    """As the importer reads an upload: the format from the content, CSV zips through the zip checks."""
    path = tmp / f"upload-{abs(hash(data))}"
    path.write_bytes(data)
    found = detect_format(path, route)
    schedule = read_csv_zip(path, ArchiveLimits(), LIMITS) if found == "csv" else \
        read_schedule(data, found, LIMITS)
    return schedule, schedule.records()


@functools.cache
def read(name: str):
    """The file's schedule and records, read once per run (the tests only look at them)."""
    route, data, _expect = FILES[name]
    with tempfile.TemporaryDirectory() as tmp:
        return read_bytes(data, route, Path(tmp))


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
    got = {_key(s): (_hm(s["start_time"]), _hm(s["end_time"])) for s in recs["sessions"]}
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
def db(module_sqlite_factory):
    return module_sqlite_factory


@pytest.fixture(scope="module")
def loaded(db, tmp_path_factory):
    """Loads a file's records on first use (one broken file fails its own tests only)."""
    ids: dict[str, int] = {}

    def load(name: str) -> int:
        if name not in ids:
            _schedule, recs = read(name)
            folder = write_folder(recs, tmp_path_factory.mktemp(name) / "archive")
            with db() as session:
                ids[name] = load_archive(session, folder, keep_ids=False).event_id
                session.commit()
        return ids[name]
    return load


# The 10,000-talk file only in the two app formats here: the e2e module exports it in every format.
REEXPORTS = [(name, fmt) for name in sorted(FILES) for fmt in SCHEDULE_FORMATS
             if name != "ten_thousand" or fmt in ("frab-xml", "schedule-json")]


@pytest.mark.parametrize(("name", "fmt"), REEXPORTS)
def test_reexport_validates(name, fmt, db, loaded):
    data = export(db, loaded(name), fmt)
    CHECKS[fmt](data)
    if fmt in ("frab-xml", "schedule-json"):  # what a conference app shows: the same talks, rooms and persons
        app = checks.giggity_sessions(data) if fmt == "frab-xml" else checks.fahrplan_sessions(data)
        _schedule, recs = read(name)
        want = sorted((s["title"], (s["microlocation"] or {}).get("name") or "Unassigned",
                       tuple(sorted(p["name"] for p in s["speakers"]))) for s in recs["sessions"])
        got = sorted((t["title"], t["room"], tuple(sorted(t["persons"]))) for t in app.values())
        assert got == want
    elif fmt == "pentabarf":
        assert len(checks.giggity_sessions(data)) == FILES[name][2].sessions


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


def test_google_text_survives_folds_inside_characters_and_escapes():
    _schedule, recs = read("google")
    talk = next(s for s in recs["sessions"] if s["x-schedule"]["source_id"] == "g1")
    assert talk["title"] == "Keynote: Café ☕ and cod, really"
    assert "Kaffee ☕ und Kabeljau — 日本語のテキスト" in talk["long_abstract"]
    assert "d’un caractère multioctet" in talk["long_abstract"]
    assert talk["microlocation"]["name"] == "Hall A, Level 2"
    assert [p["name"] for p in recs["speakers"]] == ["Siobhán Ó Briain"]
    assert recs["event"]["description"] == "Talks, workshops; and a screech-in"
    guids = [s["x-schedule"]["guid"] for s in recs["sessions"]]
    assert len(set(guids)) == len(guids)


def test_an_endless_recurrence_is_imported_once_with_a_warning():
    data = ical(["BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:weekly@example.org",
                 "DTSTART:20240101T100000Z", "DTEND:20240101T110000Z", "RRULE:FREQ=WEEKLY", "SUMMARY:Jour fixe",
                 "END:VEVENT", "END:VCALENDAR"])
    schedule = read_schedule(data, "ical", LIMITS)
    assert len(schedule.records()["sessions"]) == 1
    assert "recurrence_not_expanded" in [w["code"] for w in schedule.warnings]


def test_exdate_removes_an_occurrence():
    data = ical(["BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:daily@example.org",
                 "DTSTART;TZID=Europe/Berlin:20240330T100000", "DURATION:PT1H",
                 "RRULE:FREQ=DAILY;UNTIL=20240402T080000Z", "EXDATE;TZID=Europe/Berlin:20240401T100000",
                 "SUMMARY:Stand-up", "END:VEVENT", "END:VCALENDAR"])
    recs = read_schedule(data, "ical", LIMITS).records()
    # 10:00 wall time on both sides of the DST change (2024-03-31), 1 April excluded
    assert [s["start_time"] for s in recs["sessions"]] == ["2024-03-30T10:00:00", "2024-03-31T10:00:00",
                                                           "2024-04-02T10:00:00"]


def test_a_talk_pasted_under_another_room_is_still_one_talk():
    talk = frab_event(5, "2024-06-01", "10:00", "00:30", "Einmal", "Saal A")
    data = f"""<schedule><version>1</version><conference><title>M</title>
      <time_zone_name>Europe/Vienna</time_zone_name></conference>
      <day index="1" date="2024-06-01"><room name="Saal A">{talk}</room><room name="Saal B">{talk}</room></day>
      </schedule>""".encode()
    schedule = read_schedule(data, "frab-xml", LIMITS)
    recs = schedule.records()
    assert len(recs["sessions"]) == 1 and recs["sessions"][0]["microlocation"]["name"] == "Saal A"
    assert "duplicate_session" in [w["code"] for w in schedule.warnings]


def test_pretalx_widget_names_and_breaks():
    schedule, recs = read("pretalx_widget")
    assert sorted(s["title"] for s in recs["sessions"]) == ["Kia ora, widget", "Night talk"]
    assert sorted(r["name"] for r in recs["microlocations"]) == ["Room 6", "Whare"]
    assert [(t["name"], t["color"]) for t in recs["tracks"]] == [("Main track", "#00aa44")]
    night = next(s for s in recs["sessions"] if s["title"] == "Night talk")
    assert sorted(p["name"] for p in night["speakers"]) == ["Tama Ngata", "Émile"]
    assert night["x-schedule"]["extra"]["schedule-json"]["titles"]["mi"] == "Kōrero pō"
    assert "record_skipped" in {w["code"] for w in schedule.warnings}  # the morning tea break


def test_excel_csv_text_is_windows_1252_with_cells_kept_whole():
    _schedule, recs = read("excel_de_csv")
    first = next(s for s in recs["sessions"] if s["title"] == "Begrüßung")
    assert first["long_abstract"] == "Zeile 1\r\nZeile 2; mit Semikolon"
    assert sorted(p["name"] for p in recs["speakers"]) == ["Ilse Weiß", "Jörg Dürr"]
    assert next(p for p in recs["speakers"] if p["name"] == "Jörg Dürr")["organisation"] == "Verein für Öffentlichkeit"


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_attacks_fail_clearly(case, tmp_path):
    route, data, allowed = ATTACKS[case]
    path = tmp_path / UPLOAD_NAMES.get(case, "schedule")
    path.write_bytes(data)
    with pytest.raises(ArchiveError) as caught:
        with open_upload(path, route, tmp_path / "scratch", ArchiveLimits()):
            pass
    assert caught.value.code in allowed, (caught.value.code, str(caught.value))
    assert 0 < len(str(caught.value)) < 600 and "passwd" not in str(caught.value).replace("file:///etc/passwd", "")


def test_a_zip_posted_as_xml_says_what_it_is(tmp_path):
    path = tmp_path / "schedule.xml"
    path.write_bytes(ATTACKS["random_zip_as_xml"][1])
    with pytest.raises(ArchiveError) as caught:
        with open_upload(path, "frab-xml", tmp_path / "scratch", ArchiveLimits()):
            pass
    assert "posted as frab-xml is a zip archive" in str(caught.value) and "File event" in str(caught.value)


def test_calendar_edge_entries():
    data = ical(["BEGIN:VCALENDAR", "VERSION:2.0", "X-WR-TIMEZONE:Europe/Berlin",
                 "BEGIN:VEVENT", "UID:a", "DTSTART;VALUE=DATE:20240601", "SUMMARY:All day, no end", "END:VEVENT",
                 "BEGIN:VEVENT", "UID:b", "DTSTART:20240601T100000", "DURATION:-PT1H", "SUMMARY:Negative",
                 "END:VEVENT",
                 "BEGIN:VEVENT", "UID:c", "DTSTART;VALUE=DATE:20240601", "DTEND;VALUE=DATE:20240604",
                 "SUMMARY:Three days", "END:VEVENT", "END:VCALENDAR"])
    schedule = read_schedule(data, "ical", LIMITS)
    got = {s["x-schedule"]["source_id"]: (s["start_time"], s["end_time"]) for s in schedule.records()["sessions"]}
    assert got == {"a": ("2024-06-01T00:00:00", "2024-06-02T00:00:00"), "b": ("2024-06-01T10:00:00", None),
                   "c": ("2024-06-01T00:00:00", "2024-06-04T00:00:00")}
    assert any(w["field"] == "DURATION" for w in schedule.warnings)


def test_calendars_pasted_together_are_one_schedule():
    def calendar(name, uid, room):
        return ical(["BEGIN:VCALENDAR", "VERSION:2.0", f"X-WR-CALNAME:{name}", "X-WR-TIMEZONE:Europe/Berlin",
                     "BEGIN:VEVENT", f"UID:{uid}", "DTSTART:20240601T100000Z", "DTEND:20240601T110000Z",
                     f"SUMMARY:{uid}", f"LOCATION:{room}", "BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Alarm",
                     "TRIGGER:-PT15M", "END:VALARM", "END:VEVENT", "END:VCALENDAR"])
    schedule = read_schedule(calendar("Room A", "a1", "A") + calendar("Room B", "b1", "B"), "ical", LIMITS)
    recs = schedule.records()
    assert sorted(s["title"] for s in recs["sessions"]) == ["a1", "b1"] and len(recs["microlocations"]) == 2
    assert all(s["long_abstract"] == "" for s in recs["sessions"])  # the alarm's text is not the talk's
    assert recs["event"]["name"] == "Room A" and "calendars_merged" in [w["code"] for w in schedule.warnings]


def test_events_straight_in_a_day_are_read():
    data = f"""<schedule><version>1</version><conference><title>T</title>
      <time_zone_name>Europe/Berlin</time_zone_name></conference><day index="1" date="2024-06-01">
      {frab_event(1, "2024-06-01", "10:00", "00:30", "Loose", "Aula")}
      <room name="B">{frab_event(2, "2024-06-01", "10:00", "00:30", "In room", "B")}</room></day></schedule>"""
    schedule = read_schedule(data.encode(), "frab-xml", LIMITS)
    got = {s["title"]: s["microlocation"]["name"] for s in schedule.records()["sessions"]}
    assert got == {"Loose": "Aula", "In room": "B"}
    assert any(w["field"] == "day/event" for w in schedule.warnings)


def test_a_lone_excel_unicode_text_sheet_is_csv(tmp_path):
    """Excel's "Unicode text": UTF-16 with a BOM, tab separated, no zip."""
    text = "Title\tStart\tEnd\tRoom\tTimezone\r\nErster\t01.09.2024 10:00\t01.09.2024 11:00\tAula\tEurope/Zurich\r\n"
    path = tmp_path / "sessions.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert detect_format(path, "csv") == "csv"
    recs = read_csv_zip(path, ArchiveLimits(), LIMITS).records()
    assert [(s["title"], s["start_time"], s["microlocation"]["name"]) for s in recs["sessions"]] == \
        [("Erster", "2024-09-01T10:00:00", "Aula")]
    assert recs["event"]["timezone"] == "Europe/Zurich"


def test_xinclude_is_not_followed():
    data = ('<schedule xmlns:xi="http://www.w3.org/2001/XInclude"><version>1</version><conference><title>X'
            '</title></conference><day index="1" date="2024-01-01"><room name="R"><event id="1" guid="'
            f'{G.format(1)}"><date>2024-01-01T10:00:00Z</date><duration>00:30</duration><title>T</title>'
            '<description><xi:include href="file:///etc/passwd" parse="text"/></description></event></room></day>'
            "</schedule>").encode()
    recs = read_schedule(data, "frab-xml", LIMITS).records()
    assert "root:" not in repr(recs) and recs["sessions"][0]["long_abstract"] == ""


@pytest.mark.parametrize("name", sorted(set(FILES) - {"ten_thousand"}))
def test_import_then_export_in_its_own_format_gives_the_file_back(name, db, loaded, tmp_path):
    """import(F) -> export(F) read back: the same talks (by GUID) at the same instants, rooms and persons."""
    route, data, _expect = FILES[name]
    path = tmp_path / "in"
    path.write_bytes(data)
    fmt = detect_format(path, route)
    fmt = {"schedule2-json": "schedule-json"}.get(fmt, fmt)
    exported = export(db, loaded(name), fmt)
    _s, want = read(name)
    _s, got = read_bytes(exported, fmt, tmp_path)
    assert canonical(got)["talks"] == canonical(want)["talks"]
    assert canonical(got)["rooms"] == canonical(want)["rooms"]


def test_control_characters_of_a_one_line_file_are_named_where_they_were():
    data = (f'<schedule><version>1</version><conference><title>T&#0;x</title></conference><day index="1" '
            f'date="2024-06-01"><room name="R&#1;"><event id="7" guid="{G.format(7)}"><date>2024-06-01T10:00:00Z'
            "</date><duration>00:30</duration><title>&#xFFFE;Talk</title><description><![CDATA[a<b \x06]]>"
            "</description></event></room></day></schedule>").encode()
    schedule = read_schedule(data, "frab-xml", LIMITS)
    removed = [(w["field"], w["record_id"], w["message"].split(" (line")[0]) for w in schedule.warnings
               if w["code"] == "control_characters_removed"]
    assert removed == [("title", None, "File event: <title> in <conference>".removeprefix("File event: ")),
                       ("room", None, "<room> in <day>"),
                       ("title", "7", "File sessions, ID 7: <title> of <event id='7'>"),
                       ("description", "7", "File sessions, ID 7: <description> of <event id='7'>")]
    assert schedule.records()["sessions"][0]["title"] == "Talk"
