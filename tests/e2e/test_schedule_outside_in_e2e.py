"""The outside-in schedule files (``tests/unit/test_schedule_outside_in.py``: pretalx, frab, pentabarf 0.4, merged
files, Google, Outlook, Sched, Indico, xCal, Excel CSV...) posted through ``POST /v1/events/import/<format>`` on one
real stack: counts and times land in the database as the files hold them, each imported event exports in every
format through the API and the downloads validate; the attack files end FAILURE with the database unchanged."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from shared.models import events as m
from tests.e2e.test_import_e2e import NOT_EVENT_DATA
from tests.e2e.test_schedule_import_e2e import _event
from tests.integration.test_schedule_exports import CHECKS, SCHEDULE_FORMATS
from tests.support.e2e import PASSWORD, Client, stack_for
from tests.support.import_helpers import row_counts, wait_all
from tests.unit.test_schedule_outside_in import ATTACKS, FILES, UPLOAD_NAMES


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    # Every file in every format is exported at once: more jobs than the default per-user quota of 100.
    with stack_for(tmp_path_factory.mktemp("outside_in"), {"alice": False}, QUOTA_JOBS_IN_FLIGHT="1000") as run:
        run.start()
        yield run.env


def _client(system) -> Client:
    return Client.login(system.env["GATEWAY_URL"], "alice@example.org", PASSWORD)


def _post(client: Client, route: str, name: str, data: bytes) -> str:
    r = client.post(f"/v1/events/import/{route}", files={"file": (name, data, "application/octet-stream")},
                    timeout=120)
    assert r.status_code == 202, r.text
    return r.json()["task_url"]


def _times(database_url: str, event_id: int) -> tuple[int, dict[str, tuple[str, str]]]:
    """The number of sessions, and (start, end) wall times by the session's id in the file, else its title (as
    ``Expect.times`` names them)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(m.Session.title, m.Session.start_time, m.Session.end_time,
                                          m.Session.extra_fields).where(m.Session.event_id == event_id)).all()
    finally:
        engine.dispose()
    out = {}
    for title, start, end, extra in rows:
        sid = ((extra or {}).get("x-schedule") or {}).get("source_id")
        out[str(sid) if sid is not None else title] = (start.isoformat()[:16], end.isoformat()[:16])
    return len(rows), out


@pytest.fixture(scope="module")
def imported(system):
    alice = _client(system)
    urls = {name: _post(alice, route, UPLOAD_NAMES.get(name, "schedule"), data)
            for name, (route, data, _expect) in FILES.items()}
    tasks = wait_all(alice, list(urls.values()))
    return {name: tasks[url] for name, url in urls.items()}


@pytest.mark.parametrize("name", sorted(FILES))
def test_counts_and_times_land_as_the_file_holds_them(name, system, imported):
    task, expect = imported[name], FILES[name][2]
    assert task["state"] == "SUCCESS", task
    counts = task["result"]["counts"]
    assert (counts["sessions"], counts["microlocations"], counts["speakers"]) == \
        (expect.sessions, expect.rooms, expect.speakers), counts
    stored = _event(system.database_url, task["result"]["id"])
    assert stored["event"]["timezone"] == expect.timezone
    count, times = _times(system.database_url, task["result"]["id"])
    assert count == expect.sessions
    for sid, want in expect.times.items():
        assert times[sid] == want, sid
    codes = {w["code"] for w in task["result"]["warnings"]}
    assert expect.warnings <= codes and not expect.no_warnings & codes, task["result"]["warnings"]


def test_every_import_exports_valid_files_in_every_format(system, imported):
    alice = _client(system)
    urls = {}
    for name, task in imported.items():
        assert task["state"] == "SUCCESS", (name, task)
        for fmt in SCHEDULE_FORMATS:
            r = alice.post(f"/v1/events/{task['result']['id']}/export/{fmt}", json={})
            assert r.status_code == 202, r.text
            urls[(name, fmt)] = r.json()["task_url"]
    tasks = wait_all(alice, list(urls.values()))
    for (name, fmt), url in urls.items():
        task = tasks[url]
        assert task["state"] == "SUCCESS", (name, fmt, task)
        download = requests.get(task["result"]["download_url"], timeout=60)
        assert download.status_code == 200, (name, fmt)
        try:
            CHECKS[fmt](download.content)
        except AssertionError as exc:
            raise AssertionError(f"{name} exported as {fmt} does not validate: {exc}") from None


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_attacks_fail_clearly_and_change_nothing(case, system, imported):
    alice = _client(system)
    route, data, allowed = ATTACKS[case]
    before = row_counts(system.database_url, exclude=NOT_EVENT_DATA)
    if not data:  # the gateway refuses an empty upload itself, before any job
        r = alice.post(f"/v1/events/import/{route}", files={"file": ("schedule.xml", data, "text/xml")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file", r.text
        return
    (task,) = wait_all(alice, [_post(alice, route, UPLOAD_NAMES.get(case, "schedule"), data)]).values()
    assert task["state"] == "FAILURE", task
    assert task["result"]["code"] in allowed, task["result"]
    assert task["result"]["message"] and len(task["result"]["message"]) < 600
    assert row_counts(system.database_url, exclude=NOT_EVENT_DATA) == before


@pytest.mark.parametrize("name", ["ics_posted_as_xml", "json_posted_as_ics", "excel_us_csv"])
def test_a_file_posted_under_the_wrong_format_says_what_it_was_read_as(name, imported):
    warnings = [w for w in imported[name]["result"]["warnings"] if w["code"] == "format_detected"]
    assert len(warnings) == 1 and "read as" in warnings[0]["message"], imported[name]["result"]["warnings"]
