"""Every sample event we hold, a 5,000-session synthetic event and a hostile one, imported with the existing loader
and exported in every schedule format: each file validates against its schema (the copies in the repo), days are
local conference days, GUIDs are stable, and conference-app style readers see the same sessions in XML and JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from lxml import etree

from shared.archive.formats import FORMATS, get_format
from shared.archive.loader import load_archive
from shared.archive.writer import ExportReport
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models import events as m
from shared.schedule.xmltext import xml_text
from tests.conftest import SAMPLES_DIR
from tests.support import schedule_checks as checks
from tools.synthetic import create_synthetic_event

SCHEDULE_FORMATS = ("frab-xml", "schedule-json", "schedule2-json", "ical", "xcal", "pentabarf", "csv")
LEGACY = ("FOSSASIA16", "OTS16", "EhealthAfrica")
DASHERIZED = ("FOSSASIASummit2016", "FOSSASIASummit2018", "GoogleIO17", "MozillaAllHands17", "OSCAL2017", "OTS16",
              "OpenTechSummit2018", "PyCon17")
SAMPLES = [f"legacy/{n}" for n in LEGACY] + [f"dasherized/{n}" for n in DASHERIZED]
EXPORTED_AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CHECKS = {
    "frab-xml": checks.check_frab_xml,
    "pentabarf": checks.check_frab_xml,
    "schedule-json": checks.check_schedule_json,
    "schedule2-json": checks.check_schedule2_json,
    "ical": checks.check_ical,
    "xcal": checks.parse_xml,
    "csv": checks.check_csv_zip,
}


def export(db, event_id: int, identifier: str, report: ExportReport | None = None) -> bytes:
    chunks = get_format(identifier).write(db, event_id, {}, fetcher=None, root_url="http://127.0.0.1:8000/",
                                          exported_at=EXPORTED_AT, report=report or ExportReport(),
                                          on_progress=lambda *_: None)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def db(module_sqlite_factory):
    return module_sqlite_factory


@pytest.fixture(scope="module")
def sample_events(db) -> dict[str, int]:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"samples not found at {SAMPLES_DIR} (set SAMPLES_DIR to run these tests)")
    ids = {}
    for name in SAMPLES:
        with db() as session:
            ids[name] = load_archive(session, SAMPLES_DIR / "open_event" / name, keep_ids=False).event_id
            session.commit()
    return ids


@pytest.fixture(scope="module")
def synthetic_event(db) -> int:
    with db() as session:
        event_id = create_synthetic_event(session, sessions=5000)
        session.commit()
    return event_id


def test_every_schedule_format_is_registered():
    assert set(SCHEDULE_FORMATS) | {"json"} == set(FORMATS)
    assert {FORMATS[f].extension for f in SCHEDULE_FORMATS} == {".xml", ".json", ".ics", ".xcal", ".zip"}


@pytest.mark.parametrize("identifier", SCHEDULE_FORMATS)
@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_event_exports_valid_in_every_format(sample, identifier, db, sample_events):
    CHECKS[identifier](export(db, sample_events[sample], identifier))


@pytest.mark.parametrize("identifier", SCHEDULE_FORMATS)
def test_a_5000_session_event_exports_valid_in_every_format(identifier, db, synthetic_event):
    CHECKS[identifier](export(db, synthetic_event, identifier))


@pytest.mark.parametrize("sample", SAMPLES)
def test_xcal_has_the_same_content_as_ical(sample, db, sample_events):
    ical = export(db, sample_events[sample], "ical")
    xcal = export(db, sample_events[sample], "xcal")
    assert checks.xcal_content(xcal) == checks.ical_content(ical)


def _scheduled(db, event_id: int) -> list[str | None]:
    with db() as session:
        rows = session.execute(sa.select(m.Session.title, m.Session.state).where(
            m.Session.event_id == event_id, m.Session.start_time.is_not(None))).all()
    return [title for title, state in rows if (state or "accepted") in ("accepted", "confirmed")]


@pytest.mark.parametrize("sample", SAMPLES)
def test_apps_read_the_same_sessions_rooms_and_persons_from_xml_and_json(sample, db, sample_events):
    event_id = sample_events[sample]
    from_xml = checks.giggity_sessions(export(db, event_id, "frab-xml"))
    from_json = checks.fahrplan_sessions(export(db, event_id, "schedule-json"))
    assert from_xml == from_json
    assert sorted(s["title"] for s in from_xml.values()) == sorted(xml_text(t) for t in _scheduled(db, event_id))
    with db() as session:
        speaker_names = set(session.scalars(sa.select(m.Speaker.name).where(m.Speaker.event_id == event_id)))
        room_names = set(session.scalars(sa.select(m.Microlocation.name).where(m.Microlocation.event_id == event_id)))
    assert {p for s in from_xml.values() for p in s["persons"]} <= speaker_names
    assert {s["room"] for s in from_xml.values()} <= room_names | {"Unassigned"}


def test_sessions_carry_their_speakers(db, sample_events):
    sessions = checks.giggity_sessions(export(db, sample_events["legacy/FOSSASIA16"], "frab-xml"))
    opening = next(s for s in sessions.values() if s["title"] == "Grand Opening")
    assert opening["persons"] == ["Hong Phuc Dang"]
    assert opening["start"].isoformat() == "2016-03-18T09:30:00+08:00" and opening["duration"] == "00:30"


def test_proposals_that_were_not_accepted_stay_out_and_are_reported(db, sample_events):
    report = ExportReport()
    doc = checks.check_schedule_json(export(db, sample_events["dasherized/FOSSASIASummit2018"], "schedule-json",
                                            report))
    count = sum(len(t) for d in doc["schedule"]["conference"]["days"] for t in d["rooms"].values())
    assert count == 234  # of 371: 131 rejected, 4 pending, 2 drafts left out
    assert report.warnings[0]["code"] == "sessions_not_scheduled" and "137" in report.warnings[0]["message"]


def test_guids_are_stable_across_exports_and_edits(db, sample_events):
    event_id = sample_events["legacy/OTS16"]
    first = checks.giggity_sessions(export(db, event_id, "frab-xml"))
    with db() as session:
        session.execute(sa.update(m.Session).where(m.Session.event_id == event_id).values(title="Renamed"))
        session.commit()
    again = checks.giggity_sessions(export(db, event_id, "frab-xml"))
    assert set(first) == set(again) and {s["title"] for s in again.values()} == {"Renamed"}


def test_synthetic_sessions_after_midnight_stay_on_the_evening_before(db, synthetic_event):
    root = checks.check_frab_xml(export(db, synthetic_event, "frab-xml"))
    days = root.findall("day")
    assert [d.get("date") for d in days] == ["2027-03-18", "2027-03-19", "2027-03-20", "2027-03-21"]
    late = [e for e in days[0].iter("event") if e.findtext("date").startswith("2027-03-19T0")]
    assert late and all(e.findtext("date") < "2027-03-19T04:00" for e in late)  # 00:00-03:30: still day 1
    next_day = {e.findtext("start") for e in days[1].iter("event")}
    assert next_day == {"04:00", "04:30"}  # from the 04:00 day change on: day 2


# --------------------------------------------------------------------------------------- hostile and edge data

HOSTILE = "A\x00B\x06C\x1bD\x7fE\ufffeF\uffffG ]]> <x/> &amp; \"'\r\n;,\\ \u202e\U0001f600"


@pytest.fixture(scope="module")
def hostile_event(db) -> int:
    with db() as session:
        event = m.Event(name=HOSTILE, identifier="hostile", timezone="Europe/Berlin",
                        start_time=datetime(2027, 3, 27, 9), end_time=datetime(2027, 3, 29, 18), state="published",
                        event_url="javascript:alert(1)", extra_fields={"x-schedule": {"day_change": "05:00"}})
        session.add(event)
        session.flush()
        room = m.Microlocation(event_id=event.id, name=HOSTILE)
        twin = m.Microlocation(event_id=event.id, name=HOSTILE)  # same name: one room key in the JSON
        track = m.Track(event_id=event.id, name=HOSTILE, color="red; drop")
        kind = m.SessionType(event_id=event.id, name=HOSTILE, length="00:30")
        speaker = m.Speaker(event_id=event.id, name=HOSTILE, email="x@example.org")
        session.add_all([room, twin, track, kind, speaker])
        session.flush()
        huge = "x" * 300_000 + HOSTILE
        shared_guid = {"x-schedule": {"guid": "00000000-0000-4000-8000-000000000001", "slug": "bad slug!"}}
        times = [
            (datetime(2027, 3, 27, 10), datetime(2027, 3, 27, 11)),  # CET, +01:00
            (datetime(2027, 3, 28, 4, 30), datetime(2027, 3, 28, 5, 30)),  # before the 05:00 day change: 27th
            (datetime(2027, 3, 28, 10), datetime(2027, 3, 28, 9)),  # CEST, +02:00, end before start
            (datetime(2027, 3, 28, 2, 30), None),  # a wall time that does not exist (DST gap), no end
            (datetime(2027, 3, 29, 10), datetime(2027, 4, 3, 10)),  # longer than 99 hours
        ]
        for n, (start, end) in enumerate(times):
            s = m.Session(event_id=event.id, title=huge if n == 0 else HOSTILE, long_abstract=huge,
                          short_abstract=HOSTILE, subtitle=HOSTILE, language=HOSTILE, start_time=start, end_time=end,
                          microlocation_id=(room if n % 2 else twin).id, track_id=track.id,
                          session_type_id=kind.id, state="accepted", slides="http://x.example/s.pdf\n",
                          extra_fields=shared_guid)
            session.add(s)
            session.flush()
            session.add(m.SessionSpeaker(session_id=s.id, speaker_id=speaker.id, position=0))
        session.add(m.Session(event_id=event.id, title="unscheduled", state="accepted"))
        session.commit()
        return event.id


@pytest.mark.parametrize("identifier", SCHEDULE_FORMATS)
def test_hostile_text_never_makes_an_invalid_document(identifier, db, hostile_event):
    CHECKS[identifier](export(db, hostile_event, identifier))


def test_hostile_text_is_cleaned_not_dropped(db, hostile_event):
    sessions = checks.giggity_sessions(export(db, hostile_event, "frab-xml"))
    titles = {s["title"] for s in sessions.values()}
    assert "ABCDEFG ]]> <x/> &amp; \"'\r\n;,\\ \u202e\U0001f600" in titles
    assert len(sessions) == 5  # duplicate imported GUIDs gave way to derived ones; the unscheduled one is out
    calendar = checks.check_ical(export(db, hostile_event, "ical"))
    summaries = [str(e["SUMMARY"]) for e in calendar.walk("VEVENT")]
    assert any(s.startswith("ABCDEFG ]]> <x/> &amp; \"'\n;,\\") for s in summaries)


def test_hostile_event_times_days_and_zones(db, hostile_event):
    root = checks.check_frab_xml(export(db, hostile_event, "frab-xml"))
    by_start = {e.findtext("date"): (e, d.get("date")) for d in root.iter("day") for e in d.iter("event")}
    assert by_start["2027-03-27T10:00:00+01:00"][1] == "2027-03-27"
    assert by_start["2027-03-28T04:30:00+02:00"][1] == "2027-03-27"  # the event's own day change, 05:00
    assert by_start["2027-03-28T10:00:00+02:00"][0].findtext("duration") == "00:00"
    assert by_start["2027-03-29T10:00:00+02:00"][0].findtext("duration") == "99:59"
    assert root.find("conference/time_zone_name").text == "Europe/Berlin"
    calendar = checks.check_ical(export(db, hostile_event, "ical"))
    [tz] = calendar.walk("VTIMEZONE")
    assert {c.name for c in tz.subcomponents} == {"STANDARD", "DAYLIGHT"}
    offsets = {e["DTSTART"].dt.utcoffset().total_seconds() / 3600 for e in calendar.walk("VEVENT")}
    assert offsets == {1.0, 2.0}


def test_hostile_csv_defuses_formulas(db, hostile_event):
    with db() as session:
        session.add(m.Speaker(event_id=hostile_event, name="=HYPERLINK(\"http://evil\")"))
        session.commit()
    tables = checks.check_csv_zip(export(db, hostile_event, "csv"))
    assert len(tables["sessions"]) == 6  # the unscheduled session too: this is the organizer's list
    assert {row["timezone"] for row in tables["sessions"]} == {"Europe/Berlin"}
    assert {row["event"] for row in tables["sessions"]} == {xml_text(HOSTILE)}
    assert "'=HYPERLINK(\"http://evil\")" in [row["name"] for row in tables["speakers"]]


def test_an_empty_event_still_gives_valid_files(db):
    with db() as session:
        event = m.Event(name="Empty", timezone="Not/AZone")
        session.add(event)
        session.commit()
        event_id = event.id
    for identifier in SCHEDULE_FORMATS:
        CHECKS[identifier](export(db, event_id, identifier))
    root = checks.check_frab_xml(export(db, event_id, "frab-xml"))
    assert root.find("day").get("date") == date(1970, 1, 1).isoformat()


def test_a_missing_event_fails_on_the_first_chunk(db):
    from shared.archive.writer import EventNotFound

    for identifier in SCHEDULE_FORMATS:
        with pytest.raises(EventNotFound):
            export(db, 987654, identifier)


def test_the_same_data_gives_the_same_bytes(db, sample_events):
    event_id = sample_events["legacy/FOSSASIA16"]
    for identifier in ("frab-xml", "schedule-json", "schedule2-json", "ical", "xcal", "pentabarf"):
        assert export(db, event_id, identifier) == export(db, event_id, identifier)


def test_schema_copies_are_the_samples_schemas():
    source = SAMPLES_DIR / "peers" / "voc_schedule"
    if not source.is_dir():
        pytest.skip(f"C3VOC samples not found at {source} (set SAMPLES_DIR to run this test)")
    pairs = {"schedule.xml.xsd": "xsd/schedule.xml.xsd",
             "schedule-without-person.xml.xsd": "xsd/schedule-without-person.xml.xsd",
             "schema.json": "json_schema/schema.json", "schema2.json": "json_schema/schema2.json",
             "LICENCE.txt": "LICENCE.txt"}
    ours = Path(checks.SCHEMAS)
    assert sorted(p.name for p in ours.iterdir()) == sorted(pairs)
    for mine, theirs in pairs.items():
        assert (ours / mine).read_bytes() == (source / theirs).read_bytes(), mine


# ------------------------------------------------------------------------- what frab itself writes (KC2015)

def _kc2015() -> Path:
    folder = SAMPLES_DIR / "peers" / "frab_kc2015"
    if not folder.is_dir():
        pytest.skip(f"KC2015 samples not found at {folder} (set SAMPLES_DIR to run this test)")
    return folder


def test_kc2015_is_valid_once_cleaned_like_our_text():
    raw = (_kc2015() / "schedule.xml").read_bytes()
    with pytest.raises(etree.XMLSyntaxError, match="(?i)char"):
        checks.parse_xml(raw)  # frab's five U+0006 make it unreadable as is
    cleaned = xml_text(raw.decode("utf-8")).encode("utf-8")
    assert checks.frab_xsd().validate(checks.parse_xml(cleaned))
    assert len(checks.giggity_sessions(cleaned)) == 106


def test_we_write_every_event_element_frab_writes(db, sample_events):
    kc = checks.parse_xml(xml_text((_kc2015() / "schedule.xml").read_text("utf-8")).encode("utf-8"))
    frab_children = {child.tag for event in kc.iter("event") for child in event}
    ours = checks.parse_xml(export(db, sample_events["legacy/FOSSASIA16"], "frab-xml"))
    our_children = {child.tag for event in ours.iter("event") for child in event}
    assert frab_children <= our_children, frab_children - our_children
    assert {"acronym", "title", "start", "end", "days", "timeslot_duration"} <= {c.tag for c in ours.find("conference")}


@pytest.mark.parametrize("identifier", SCHEDULE_FORMATS)
def test_sqlite_and_postgresql_give_the_same_valid_files(identifier, samples_dir, sqlite_url, postgres_url):
    """FOSSASIA16 exported from each database: valid, and byte for byte the same (ids kept, order by file order)."""
    outputs = []
    for url in (sqlite_url, postgres_url):
        upgrade_to_head(url)
        engine = make_engine(url)
        try:
            db = make_session_factory(engine)
            with db() as session:
                event_id = load_archive(session, samples_dir / "open_event" / "legacy" / "FOSSASIA16").event_id
                session.commit()
            outputs.append(export(db, event_id, identifier))
        finally:
            engine.dispose()
    CHECKS[identifier](outputs[1])
    assert outputs[0] == outputs[1]
