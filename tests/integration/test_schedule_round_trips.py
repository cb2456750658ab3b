"""Round trips of the schedule formats through the database: import(F) then export(F) holds the source's sessions,
times, rooms, persons and GUIDs; KC2015's frab XML through schedule.json and back is a fixed point.

Canonical form: both files are read by the import side's reader into the neutral records, and compared on what the
format carries (times as UTC instants, so a file with offsets and one with a zone name compare by the moment)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from shared.archive.formats import FORMATS
from shared.archive.loader import load_archive
from shared.archive.reader import ArchiveLimits
from shared.archive.writer import ExportReport
from shared.schedule.readers import ScheduleLimits, detect_format, read_csv_zip, read_schedule
from shared.schedule.readers.archive_out import write_folder
from tests.conftest import SAMPLES_DIR

PEERS = SAMPLES_DIR / "peers"
pytestmark = pytest.mark.skipif(not PEERS.is_dir(), reason=f"peer samples not found at {PEERS} (set SAMPLES_DIR)")
EXPORTED_AT = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = {
    "frab-xml": ["frab_kc2015/schedule.xml", "real_world/debconf23.xml"],
    "pentabarf": ["real_world/fosdem_2021.xml"],
    "schedule-json": ["frab_kc2015/schedule.json", "voc_schedule/json_examples/pretalx-democon.json"],
    "schedule2-json": ["voc_schedule/json_examples/hub-schedule2.json", "frab_kc2015/schedule.json"],
    "ical": ["frab_kc2015/schedule.ics", "real_world/kielux_2020.ics"],
    "xcal": ["frab_kc2015/schedule.xcal"],
}


@pytest.fixture
def db(sqlite_factory):
    return sqlite_factory


def parse(data: bytes, fmt: str, tmp: Path) -> dict:
    path = tmp / f"in-{abs(hash(data))}"
    path.write_bytes(data)
    found = detect_format(path, fmt)
    schedule = read_csv_zip(path, ArchiveLimits(), ScheduleLimits()) if found == "csv" else \
        read_schedule(data, found, ScheduleLimits())
    return schedule.records()


def import_bytes(db, data: bytes, fmt: str, tmp: Path) -> int:
    folder = write_folder(parse(data, fmt, tmp), tmp / f"archive-{abs(hash(data))}")
    with db() as session:
        result = load_archive(session, folder, keep_ids=False)
        session.commit()
    return result.event_id


def export_bytes(db, event_id: int, fmt: str) -> bytes:
    return b"".join(FORMATS[fmt].write(db, event_id, {}, fetcher=None, root_url="https://example.org/",
                                       exported_at=EXPORTED_AT, report=ExportReport(),
                                       on_progress=lambda *a: None))


def canonical(records: dict) -> dict:
    tz = ZoneInfo(records["event"]["timezone"])

    def instant(text):
        return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC) if text else None

    talks = {}
    for s in records["sessions"]:
        x = s["x-schedule"]
        talks[x["guid"]] = (s["title"].strip(" -"), instant(s["start_time"]), instant(s["end_time"]),
                            (s["microlocation"] or {}).get("name"), tuple(sorted(p["name"] for p in s["speakers"])))
    return {"talks": talks, "persons": sorted(p["name"] for p in records["speakers"]),
            "rooms": sorted({t[3] for t in talks.values() if t[3]})}


@pytest.mark.parametrize("fmt,name", [(f, n) for f, names in SOURCES.items() for n in names])
def test_import_then_export_gives_the_source_back(fmt, name, db, tmp_path):
    source = (PEERS / name).read_bytes()
    event_id = import_bytes(db, source, fmt, tmp_path)
    exported = export_bytes(db, event_id, fmt)
    want, got = canonical(parse(source, fmt, tmp_path)), canonical(parse(exported, fmt, tmp_path))
    assert want["talks"] and set(got["talks"]) == set(want["talks"])  # same GUIDs
    for guid, talk in want["talks"].items():
        assert got["talks"][guid] == talk, guid
    assert got["rooms"] == want["rooms"]
    if want["persons"]:
        assert got["persons"] == want["persons"]


def test_csv_round_trip(db, tmp_path):
    event_id = import_bytes(db, (PEERS / "frab_kc2015/schedule.xml").read_bytes(), "frab-xml", tmp_path)
    first = export_bytes(db, event_id, "csv")
    again = import_bytes(db, first, "csv", tmp_path)
    second = export_bytes(db, again, "csv")
    want, got = parse(first, "csv", tmp_path), parse(second, "csv", tmp_path)
    assert len(want["sessions"]) == 106 and len(want["speakers"]) == 57
    assert want["event"]["name"] == got["event"]["name"] == "Klimcamp 2015"
    assert canonical(got) == canonical(want)
    assert canonical(want)["talks"] == canonical(parse((PEERS / "frab_kc2015/schedule.xml").read_bytes(),
                                                       "frab-xml", tmp_path))["talks"]


def test_kc2015_xml_through_schedule_json_is_a_fixed_point(db, tmp_path):
    source = (PEERS / "frab_kc2015/schedule.xml").read_bytes()
    first = import_bytes(db, source, "frab-xml", tmp_path)
    as_json = export_bytes(db, first, "schedule-json")
    second = import_bytes(db, as_json, "schedule-json", tmp_path)
    xml_first, xml_second = export_bytes(db, first, "frab-xml"), export_bytes(db, second, "frab-xml")
    assert xml_second == xml_first
    assert canonical(parse(xml_second, "frab-xml", tmp_path)) == canonical(parse(source, "frab-xml", tmp_path))
