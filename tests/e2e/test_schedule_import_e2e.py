"""Schedule files imported end to end: the real services over real RabbitMQ, posted to
``POST /v1/events/import/<format>``; the counts of each file land in the database, the four KC2015 files make the
same event, and hostile files end FAILURE with the database unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.models import events as m
from tests.conftest import SAMPLES_DIR
from tests.e2e.test_import_e2e import NOT_EVENT_DATA
from tests.support.e2e import PASSWORD, Client, stack_for
from tests.support.import_helpers import row_counts, wait_all

PEERS = SAMPLES_DIR / "peers"
# file, route it is posted to, (sessions, rooms, speakers) the file holds
FILES = {
    "kc_xml": ("frab_kc2015/schedule.xml", "frab-xml", (106, 11, 57)),
    "kc_json": ("frab_kc2015/schedule.json", "schedule-json", (106, 11, 57)),
    "kc_ics": ("frab_kc2015/schedule.ics", "ical", (106, 10, 0)),  # frab's iCal lists rooms in use, no persons
    "kc_xcal": ("frab_kc2015/schedule.xcal", "xcal", (106, 10, 57)),
    "fosdem": ("real_world/fosdem_2021.xml", "pentabarf", (773, 108, 684)),
    "debconf": ("real_world/debconf23.xml", "frab-xml", (117, 5, 87)),
    "kielux": ("real_world/kielux_2020.ics", "ical", (24, 4, 20)),
    "pretalx": ("voc_schedule/json_examples/pretalx-democon.json", "schedule-json", (36, 2, 27)),
    "lying": ("frab_kc2015/schedule.json", "xcal", (106, 11, 57)),  # JSON posted as xCal, named .xml below
}
HOSTILE = {
    "billion_laughs": b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                      b"<schedule><conference><title>&b;</title></conference></schedule>",
    "xxe": b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]><schedule><conference>'
           b"<title>&x;</title></conference></schedule>",
    "external_dtd": b'<?xml version="1.0"?><!DOCTYPE schedule SYSTEM "file:///etc/passwd"><schedule/>',
    "deep": b"<schedule>" + b"<a>" * 3000 + b"</a>" * 3000 + b"</schedule>",
    "png_posted_as_xml": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    "html_as_xml": b"<!DOCTYPE html><html><body>not a schedule</body></html>",
}
pytestmark = pytest.mark.skipif(not PEERS.is_dir(), reason=f"peer samples not found at {PEERS} (set SAMPLES_DIR)")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with stack_for(tmp_path_factory.mktemp("schedule_import"), {"alice": False}) as run:
        run.start()
        yield run.env


def _post(client: Client, fmt: str, name: str, data: bytes) -> str:
    r = client.post(f"/v1/events/import/{fmt}", files={"file": (name, data, "application/octet-stream")},
                    timeout=60)
    assert r.status_code == 202, r.text
    return r.json()["task_url"]


@pytest.fixture(scope="module")
def imported(system):
    alice = Client.login(system.env["GATEWAY_URL"], "alice@example.org", PASSWORD)
    urls = {key: _post(alice, fmt, "schedule.xml" if key == "lying" else Path(name).name, (PEERS / name).read_bytes())
            for key, (name, fmt, _counts) in FILES.items()}
    tasks = wait_all(alice, list(urls.values()))
    return {key: tasks[url] for key, url in urls.items()}


def _event(database_url: str, event_id: int) -> dict:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rooms = dict(conn.execute(sa.select(m.Microlocation.id, m.Microlocation.name)
                                      .where(m.Microlocation.event_id == event_id)).all())
            sessions = conn.execute(sa.select(m.Session).where(m.Session.event_id == event_id)).mappings().all()
            speakers = conn.scalar(sa.select(sa.func.count()).select_from(m.Speaker)
                                   .where(m.Speaker.event_id == event_id))
            event = conn.execute(sa.select(m.Event).where(m.Event.id == event_id)).mappings().one()
    finally:
        engine.dispose()
    talks = {}
    for s in sessions:
        extra = s["extra_fields"] or {}
        xs = extra.get("x-schedule") or {}
        talks[str(xs.get("source_id"))] = {
            "start": s["start_time"], "end": s["end_time"], "room": rooms.get(s["microlocation_id"]),
            "title": (s["title"] or "").strip(" -"), "guid": xs.get("guid")}
    return {"event": dict(event), "talks": talks, "rooms": len(rooms), "speakers": speakers}


@pytest.mark.parametrize("key", sorted(FILES))
def test_each_file_imports_with_its_counts(key, system, imported):
    task = imported[key]
    assert task["state"] == "SUCCESS", task
    sessions, rooms, speakers = FILES[key][2]
    counts = task["result"]["counts"]
    assert (counts["sessions"], counts["microlocations"], counts["speakers"]) == (sessions, rooms, speakers), counts
    stored = _event(system.database_url, task["result"]["id"])
    assert (len(stored["talks"]), stored["rooms"], stored["speakers"]) == (sessions, rooms, speakers)
    assert all(t["guid"] for t in stored["talks"].values())


def test_known_defects_come_back_as_warnings(imported):
    def codes(key):
        return {w["code"] for w in imported[key]["result"]["warnings"]}

    assert "control_characters_removed" in codes("kc_xml")
    assert "missing_element" in codes("fosdem") and "missing_attribute" in codes("fosdem")
    assert "format_detected" in codes("lying") and "format_detected" not in codes("kc_json")
    debconf = [w for w in imported["debconf"]["result"]["warnings"] if w["field"] == "recording/license"]
    assert debconf and "<recording>" in debconf[0]["message"]


def test_times_match_their_zones(system, imported):
    debconf = _event(system.database_url, imported["debconf"]["result"]["id"])
    assert debconf["event"]["timezone"] == "Asia/Kolkata"
    assert debconf["talks"]["35"]["start"].isoformat() == "2023-09-10T10:30:00"
    kielux = _event(system.database_url, imported["kielux"]["result"]["id"])
    assert kielux["event"]["timezone"] == "UTC"
    assert kielux["talks"]["460"]["start"].isoformat() == "2020-09-18T11:00:00"


def test_the_four_kc2015_files_import_to_the_same_event(system, imported):
    url = system.database_url
    xml, js, ics, xcal = (_event(url, imported[k]["result"]["id"])["talks"] for k in ("kc_xml", "kc_json", "kc_ics",
                                                                                     "kc_xcal"))
    assert set(xml) == set(js) == set(ics) == set(xcal) and len(xml) == 106
    for sid, talk in xml.items():
        for other in (js, ics, xcal):
            assert (other[sid]["start"], other[sid]["end"], other[sid]["room"], other[sid]["title"]) == \
                (talk["start"], talk["end"], talk["room"], talk["title"]), sid
        assert js[sid]["guid"] == ics[sid]["guid"] == talk["guid"], sid  # frab's xCal carries no GUIDs


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_fails_and_changes_nothing(case, system, imported):
    alice = Client.login(system.env["GATEWAY_URL"], "alice@example.org", PASSWORD)
    before = row_counts(system.database_url, exclude=NOT_EVENT_DATA)
    task = wait_all(alice, [_post(alice, "frab-xml", "schedule.xml", HOSTILE[case])])
    (task,) = task.values()
    assert task["state"] == "FAILURE", task
    assert task["result"]["code"] in ("xml_entities", "xml_external_reference", "too_deep", "not_well_formed",
                                      "unknown_format")
    assert task["result"]["message"] and "root:" not in task["result"]["message"]
    assert row_counts(system.database_url, exclude=NOT_EVENT_DATA) == before


def test_frontend_names_and_unknown_formats(system):
    alice = Client.login(system.env["GATEWAY_URL"], "alice@example.org", PASSWORD)
    r = alice.post("/v1/events/import/docx", files={"file": ("a.docx", b"x", "application/octet-stream")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_format"
    r = alice.post("/v1/events/import/json", files={"file": ("a.xml", b"<schedule/>", "text/xml")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_type"  # the zip route is unchanged
