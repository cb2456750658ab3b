"""Schedule readers on the peers' real files: counts as the files hold them, times in their zones, warnings for the
known defects; hostile files fail clearly; the format is read from the content; the four KC2015 files agree."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from services.importer.transcode import open_upload
from shared.archive.reader import ArchiveError, ArchiveLimits, validate_archive
from shared.schedule.readers import ScheduleLimits, detect_format, read_csv_zip, read_schedule
from tests.conftest import SAMPLES_DIR

PEERS = SAMPLES_DIR / "peers"
KC = PEERS / "frab_kc2015"
needs_peers = pytest.mark.skipif(not PEERS.is_dir(), reason=f"peer samples not found at {PEERS} (set SAMPLES_DIR)")
LIMITS = ScheduleLimits()


def records(path: Path, fmt: str):
    schedule = read_schedule(path.read_bytes(), fmt, LIMITS)
    return schedule, schedule.records()


def codes(schedule) -> list[str]:
    return [w["code"] for w in schedule.warnings]


def by_source(recs) -> dict:
    return {str(s["x-schedule"]["source_id"]): s for s in recs["sessions"]}


# ------------------------------------------------------------------------------------------------- counts per file

def _xml_counts(path: Path) -> tuple[int, int, int]:
    text = path.read_text(encoding="utf-8", errors="replace")
    events = len(re.findall(r"<event\s", text))
    rooms = len(set(re.findall(r"<room\s+name=['\"]([^'\"]*)['\"]", text)))
    persons = len(set(re.findall(r"<person\s+id=['\"](\d+)['\"]", text)))
    return events, rooms, persons


@needs_peers
@pytest.mark.parametrize("name,fmt", [("frab_kc2015/schedule.xml", "frab-xml"), ("real_world/debconf23.xml",
                                                                                 "frab-xml"),
                                      ("real_world/fosdem_2021.xml", "pentabarf")])
def test_schedule_xml_counts_match_the_file(name, fmt):
    path = PEERS / name
    events, rooms, persons = _xml_counts(path)
    _schedule, recs = records(path, fmt)
    assert len(recs["sessions"]) == events
    assert len(recs["microlocations"]) == len({re.sub(r"\s+", " ", r).strip() for r in re.findall(
        r"<room\s+name=['\"]([^'\"]*)['\"]", path.read_text(encoding="utf-8", errors="replace"))}) <= rooms
    assert len(recs["speakers"]) == persons


@needs_peers
def test_provenance_counts():
    assert len(records(PEERS / "real_world/debconf23.xml", "frab-xml")[1]["sessions"]) == 117
    assert len(records(PEERS / "real_world/debconf23.xml", "frab-xml")[1]["microlocations"]) == 5
    fosdem = records(PEERS / "real_world/fosdem_2021.xml", "pentabarf")[1]
    assert (len(fosdem["sessions"]), len(fosdem["microlocations"])) == (773, 108)
    assert len(records(KC / "schedule.xml", "frab-xml")[1]["sessions"]) == 106
    assert len(records(PEERS / "real_world/kielux_2020.ics", "ical")[1]["sessions"]) == 24


# ------------------------------------------------------------------------------------------------ times and zones

@needs_peers
def test_debconf_times_are_read_in_the_conference_zone():
    schedule, recs = records(PEERS / "real_world/debconf23.xml", "frab-xml")
    assert recs["event"]["timezone"] == "Asia/Kolkata"
    opening = by_source(recs)["35"]  # <date>2023-09-10T05:00:00+00:00</date>, <start>10:30</start>
    assert (opening["start_time"], opening["end_time"]) == ("2023-09-10T10:30:00", "2023-09-10T10:50:00")
    assert opening["x-schedule"]["guid"] == "455d075f-48c0-2ec2-24b3-f5add30c383a"
    assert [s["name"] for s in opening["speakers"]] == ["Sruthi Chandran"]


@needs_peers
def test_kielux_utc_times_stay_utc():
    schedule, recs = records(PEERS / "real_world/kielux_2020.ics", "ical")
    assert recs["event"]["timezone"] == "UTC"
    first = by_source(recs)["460"]  # DTSTART:20200918T110000Z
    assert (first["start_time"], first["end_time"]) == ("2020-09-18T11:00:00", "2020-09-18T12:00:00")
    assert first["microlocation"]["name"] == "Ravensberg"
    assert [s["name"] for s in first["speakers"]] == ["Jakob Semere"]


@needs_peers
def test_ical_tzid_is_read_through_the_tz_database():
    schedule, recs = records(KC / "schedule.ics", "ical")
    assert recs["event"]["timezone"] == "Europe/Berlin"
    talk = by_source(recs)["70"]  # DTSTART;TZID=Europe/Berlin:20150812T160000, UID f96a63bd-...@localhost
    assert (talk["start_time"], talk["end_time"]) == ("2015-08-12T16:00:00", "2015-08-12T17:30:00")
    assert talk["x-schedule"]["guid"] == "f96a63bd-0b6d-4439-b187-375eb5bb965a"


def test_ical_tzid_converted_into_the_named_event_zone():
    text = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-WR-CALNAME:T\r\nX-WR-TIMEZONE:Europe/London\r\nBEGIN:VEVENT\r\n"
            "UID:1@x\r\nSUMMARY:A\r\nDTSTART;TZID=Europe/Berlin:20240701T100000\r\nDURATION:PT1H30M\r\n"
            "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:2@x\r\nSUMMARY:B\r\nDTSTART:20240701T100000Z\r\n"
            "DTEND:20240701T110000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:3@x\r\nSUMMARY:C\r\n"
            "DTSTART:20240701T100000\r\nDTEND:20240701T103000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    recs = read_schedule(text.encode(), "ical", LIMITS).records()
    assert recs["event"]["timezone"] == "Europe/London"
    got = {s["title"]: (s["start_time"], s["end_time"]) for s in recs["sessions"]}
    assert got["A"] == ("2024-07-01T09:00:00", "2024-07-01T10:30:00")  # 10:00 CEST = 09:00 BST
    assert got["B"] == ("2024-07-01T11:00:00", "2024-07-01T12:00:00")  # 10:00 UTC = 11:00 BST
    assert got["C"] == ("2024-07-01T10:00:00", "2024-07-01T10:30:00")  # floating: wall time as written


def test_frab_xml_day_change_puts_early_starts_on_the_next_date():
    xml = b"""<schedule><version>1</version><conference><title>N</title><time_zone_name>Europe/Berlin</time_zone_name>
    <day_change>04:00</day_change></conference><day date="2024-07-01" index="1"><room name="R">
    <event id="1" guid="0f6a2f4c-3b7e-4c1a-9d7e-2a9b1c3d4e5f"><start>23:30</start><duration>01:00</duration>
    <title>Late</title></event><event id="2"><start>01:00</start><duration>00:30</duration><title>Night</title></event>
    </room></day></schedule>"""
    schedule, recs = read_schedule(xml, "frab-xml", LIMITS), None
    recs = schedule.records()
    got = {s["title"]: (s["start_time"], s["end_time"]) for s in recs["sessions"]}
    assert got == {"Late": ("2024-07-01T23:30:00", "2024-07-02T00:30:00"),
                   "Night": ("2024-07-02T01:00:00", "2024-07-02T01:30:00")}
    assert recs["event"]["x-schedule"]["day_change"] == "04:00"
    assert "missing_attribute" in codes(schedule)  # day without start/end, event 2 without guid


# -------------------------------------------------------------------------------------- warnings for known defects

@needs_peers
def test_kc2015_control_characters_are_removed_and_named():
    schedule, recs = records(KC / "schedule.xml", "frab-xml")
    removed = [w for w in schedule.warnings if w["code"] == "control_characters_removed"]
    assert sum(int(re.search(r"held (\d+)", w["message"]).group(1)) for w in removed) == 5
    assert all(w["record_id"] == "97" and "<description>" in w["message"] for w in removed)
    assert "\x06" not in by_source(recs)["97"]["long_abstract"]


@needs_peers
def test_fosdem_missing_version_day_bounds_and_guids_are_warnings():
    schedule, recs = records(PEERS / "real_world/fosdem_2021.xml", "pentabarf")
    messages = " | ".join(w["message"] for w in schedule.warnings)
    assert "<version>" in messages and "<day>" in messages and "guid" in messages
    guids = [s["x-schedule"]["guid"] for s in recs["sessions"]]
    assert len(set(guids)) == len(guids) == 773
    again = records(PEERS / "real_world/fosdem_2021.xml", "pentabarf")[1]
    assert [s["x-schedule"]["guid"] for s in again["sessions"]] == guids  # derived, hence stable


@needs_peers
def test_debconf_recording_without_license_is_a_warning():
    schedule, recs = records(PEERS / "real_world/debconf23.xml", "frab-xml")
    missing = [w for w in schedule.warnings if w["field"] == "recording/license"]
    text = (PEERS / "real_world/debconf23.xml").read_text(encoding="utf-8")
    blocks = re.findall(r"<recording>(.*?)</recording>", text, re.DOTALL)
    assert len(missing) == sum(1 for b in blocks if "<license>" not in b) > 0
    assert by_source(recs)["35"]["x-schedule"]["recording"] == {"license": "DebConf Video License (MIT-like)",
                                                                 "optout": False}


def test_merged_files_with_duplicate_ids():
    xml = b"""<schedule><version>1</version><conference><title>M</title></conference>
    <day date="2024-07-01" index="1"><room name="R">
    <event id="7" guid="0f6a2f4c-3b7e-4c1a-9d7e-2a9b1c3d4e5f"><date>2024-07-01T10:00:00+02:00</date>
    <duration>00:30</duration><title>Same</title><persons><person id="3">Ada</person></persons></event>
    <event id="7" guid="0f6a2f4c-3b7e-4c1a-9d7e-2a9b1c3d4e5f"><date>2024-07-01T10:00:00+02:00</date>
    <duration>00:30</duration><title>Same</title><persons><person id="3">Ada</person></persons></event>
    <event id="7" guid="0f6a2f4c-3b7e-4c1a-9d7e-2a9b1c3d4e5f"><date>2024-07-01T12:00:00+02:00</date>
    <duration>00:30</duration><title>Other</title><persons><person id="3">Ada</person></persons></event>
    </room></day></schedule>"""
    schedule = read_schedule(xml, "frab-xml", LIMITS)
    recs = schedule.records()
    assert [s["title"] for s in recs["sessions"]] == ["Same", "Other"]
    assert {"duplicate_session", "id_reassigned", "duplicate_guid"} <= set(codes(schedule))
    guids = [s["x-schedule"]["guid"] for s in recs["sessions"]]
    assert len(set(guids)) == 2 and guids[0] == "0f6a2f4c-3b7e-4c1a-9d7e-2a9b1c3d4e5f"
    assert len(recs["speakers"]) == 1 and len(recs["speakers"][0]["sessions"]) == 2


# -------------------------------------------------------------------------------------- the four KC2015 files agree

def _talks(path: Path, fmt: str) -> dict:
    _schedule, recs = records(path, fmt)
    return {str(s["x-schedule"]["source_id"]): s for s in recs["sessions"]}


@needs_peers
def test_the_four_kc2015_files_give_the_same_sessions():
    xml, js, ics, xcal = (_talks(KC / "schedule.xml", "frab-xml"), _talks(KC / "schedule.json", "schedule-json"),
                          _talks(KC / "schedule.ics", "ical"), _talks(KC / "schedule.xcal", "xcal"))
    assert set(xml) == set(js) == set(ics) == set(xcal) and len(xml) == 106
    for sid, talk in xml.items():
        for other in (js, ics, xcal):  # local wall times: xCal's are floating, the others name +02:00 / Berlin
            assert (other[sid]["start_time"], other[sid]["end_time"]) == (talk["start_time"], talk["end_time"]), sid
            assert other[sid]["microlocation"]["name"] == talk["microlocation"]["name"], sid
            assert other[sid]["title"].strip(" -") == talk["title"].strip(" -"), sid
        # GUIDs: schedule.xml, schedule.json and the iCal UIDs carry them; frab's xCal has none (pentabarf UIDs)
        assert js[sid]["x-schedule"]["guid"] == ics[sid]["x-schedule"]["guid"] == talk["x-schedule"]["guid"], sid
        # persons: the XML, JSON and xCal (attendee) carry them; frab's iCal lists none
        names = sorted(p["name"] for p in talk["speakers"])
        assert sorted(p["name"] for p in js[sid]["speakers"]) == names, sid
        assert sorted(p["name"] for p in xcal[sid]["speakers"]) == names, sid


# ---------------------------------------------------------------------------------------------------- hostile files

HOSTILE = {
    "billion_laughs": (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;'
                       b'&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><schedule><conference><title>'
                       b'&c;</title></conference></schedule>', "xml_entities"),
    "xxe_file": (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><schedule>'
                 b'<conference><title>&x;</title></conference></schedule>', "xml_external_reference"),
    "external_dtd": (b'<?xml version="1.0"?><!DOCTYPE schedule SYSTEM "file:///etc/passwd"><schedule/>',
                     "xml_external_reference"),
    "parameter_entity": (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x">%p;]>'
                         b'<schedule/>', "xml_external_reference"),
    "deep_nesting": (b"<schedule>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</schedule>", None),
    "huge_text": (b"<schedule><conference><title>" + b"x" * 2_000_001 + b"</title></conference></schedule>", None),
    "not_xml": (b"<schedule><conference>", "not_well_formed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_fails_clearly(case):
    data, code = HOSTILE[case]
    with pytest.raises(ArchiveError) as caught:
        read_schedule(data, "frab-xml", LIMITS).records()
    assert caught.value.message
    if code is not None:
        assert caught.value.code == code, caught.value.message
    else:
        assert caught.value.code in ("too_deep", "text_too_long", "not_well_formed"), caught.value.message
    assert b"root:" not in caught.value.message.encode()  # nothing of /etc/passwd leaks into the message


def test_file_size_limit():
    with pytest.raises(ArchiveError) as caught:
        read_schedule(b"<schedule/>" + b" " * 200, "frab-xml", ScheduleLimits(max_file_bytes=100))
    assert caught.value.code == "file_too_large"


def test_deep_json_fails_clearly():
    with pytest.raises(ArchiveError) as caught:
        read_schedule(b'{"schedule": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "schedule-json", LIMITS)
    assert caught.value.code == "too_deep"


# ------------------------------------------------------------------------------------------- detection and transcode

@needs_peers
@pytest.mark.parametrize("name,claimed,found", [
    ("frab_kc2015/schedule.json", "frab-xml", "schedule-json"),  # a .xml that is JSON
    ("frab_kc2015/schedule.xml", "ical", "frab-xml"),
    ("frab_kc2015/schedule.xcal", "frab-xml", "xcal"),
    ("real_world/kielux_2020.ics", "xcal", "ical"),
    ("real_world/fosdem_2021.xml", "pentabarf", "pentabarf"),
])
def test_format_is_detected_from_content(name, claimed, found):
    assert detect_format(PEERS / name, claimed) == found


def test_an_ics_that_is_a_zip_is_read_as_a_zip(tmp_path):
    path = tmp_path / "schedule.ics"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("event", "{}")
    assert detect_format(path, "ical") == "json"
    garbage = tmp_path / "x.xml"
    garbage.write_bytes(b"\x00\x01binary")
    with pytest.raises(ArchiveError) as caught:
        detect_format(garbage, "frab-xml")
    assert caught.value.code == "unknown_format"


@needs_peers
def test_transcoded_archive_validates_with_the_readers_warnings_first(tmp_path):
    with open_upload(KC / "schedule.xml", "ical", tmp_path, ArchiveLimits()) as archive:
        counts = validate_archive(archive)
        assert archive.variant == "legacy"
        assert [w["code"] for w in archive.warnings[:2]] == ["format_detected", "control_characters_removed"]
    assert (counts["sessions"], counts["microlocations"], counts["speakers"]) == (106, 11, 57)


@needs_peers
def test_strict_turns_repairs_into_a_failure(tmp_path):
    with pytest.raises(ArchiveError) as caught:
        open_upload(PEERS / "real_world/debconf23.xml", "frab-xml", tmp_path, ArchiveLimits(), strict=True)
    assert caught.value.code == "repair_needed" and caught.value.errors_total >= 7


# ------------------------------------------------------------------------------------------------------------- CSV

def test_csv_zip_is_lenient_about_column_order(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sessions.csv", "Room,Title,Start,End,Speakers,Timezone,Event,Colour\n"
                                         "Hall,Opening,2024-07-01T10:00:00,2024-07-01T10:30:00,Ada; Bob,Europe/Berlin,"
                                         "Conf,red\n"
                                         "Hall,Close,2024-07-01 17:00:00+00:00,,Bob,Europe/Berlin,Conf,\n")
        archive.writestr("speakers.csv", "email,name,id\nada@example.org,Ada,1\nbob@example.org,Bob,2\n")
    path = tmp_path / "s.zip"
    path.write_bytes(buffer.getvalue())
    assert detect_format(path, "csv") == "csv"
    recs = read_csv_zip(path, ArchiveLimits(), LIMITS).records()
    assert recs["event"]["name"] == "Conf" and recs["event"]["timezone"] == "Europe/Berlin"
    got = {s["title"]: s for s in recs["sessions"]}
    assert (got["Opening"]["start_time"], got["Opening"]["end_time"]) == ("2024-07-01T10:00:00",
                                                                           "2024-07-01T10:30:00")
    assert got["Close"]["start_time"] == "2024-07-01T19:00:00"  # 17:00 UTC in Berlin
    assert [s["name"] for s in got["Opening"]["speakers"]] == ["Ada", "Bob"]
    assert {s["name"]: s["email"] for s in recs["speakers"]} == {"Ada": "ada@example.org", "Bob": "bob@example.org"}
    assert got["Opening"]["x-schedule"]["extra"] == {"csv": {"Colour": "red"}}


def test_times_are_wall_times_of_the_event_zone():
    # frab XML whose times carry +02:00 but whose conference names Europe/London: converted, not relabelled
    xml = b"""<schedule><version>1</version><conference><title>Z</title><time_zone_name>Europe/London
    </time_zone_name></conference><day date="2024-07-01" index="1"><room name="R"><event id="1">
    <date>2024-07-01T10:00:00+02:00</date><duration>00:45</duration><title>T</title></event></room></day></schedule>"""
    recs = read_schedule(xml, "frab-xml", LIMITS).records()
    assert recs["event"]["timezone"] == "Europe/London"
    assert datetime.fromisoformat(recs["sessions"][0]["start_time"]).hour == 9


def test_the_zip_route_keeps_its_own_errors_for_what_is_no_format(tmp_path):
    path = tmp_path / "event.zip"
    path.write_bytes(b"this is not a zip, nor any schedule")
    with pytest.raises(ArchiveError) as caught:
        open_upload(path, "json", tmp_path, ArchiveLimits())
    assert caught.value.code == "not_a_zip"
    with pytest.raises(ArchiveError) as caught:
        open_upload(path, "frab-xml", tmp_path, ArchiveLimits())
    assert caught.value.code == "unknown_format"


def test_long_reads_give_the_hub_turns():
    events = "".join(f'<event id="{n}"><date>2024-07-01T10:00:00+02:00</date><duration>00:10</duration>'
                     f"<title>T{n}</title></event>" for n in range(1, 1001))
    xml = f'<schedule><version>1</version><conference><title>C</title></conference><day date="2024-07-01">' \
          f'<room name="R">{events}</room></day></schedule>'.encode()
    turns = []
    schedule = read_schedule(xml, "frab-xml", LIMITS, pause=turns.append)
    assert len(schedule.records()["sessions"]) == 1000
    assert len(turns) >= 10 and set(turns) == {0}
