"""Hand-made archives as an organizer imports them (issue 8 items 7 to 11), over HTTP against the real services.

Every early_2016 and dasherized sample imports with its relations consistent with the evidence and a short, counted
list of warnings; a messy archive of our own (bad records, a contradicting relation, a broken optional file, loose
time zone, decimal-hour lengths, "null" media) imports with each repair named, and with ``?strict=true`` fails
listing every problem and writing nothing.
"""

from __future__ import annotations

import collections
import io
import json
import zipfile

import pytest
import sqlalchemy as sa

from shared.models import events as m
from tests.conftest import SAMPLES_DIR
from tests.e2e.test_import_e2e import NOT_EVENT_DATA, System
from tests.support.e2e import stack_for
from tests.support.hostile_archives import base_files
from tests.support.import_helpers import IMPORT_PATH, import_all, row_counts, submit_ok

SAMPLE_ROOT = SAMPLES_DIR / "open_event"
HAND_MADE = sorted(p.relative_to(SAMPLE_ROOT).as_posix() for group in ("early_2016", "dasherized")
                   for p in ((SAMPLE_ROOT / group).iterdir() if (SAMPLE_ROOT / group).is_dir() else ())
                   if p.is_dir() or p.suffix == ".zip")
REPEATS = 50  # reader.PER_KIND: no warning code listed more often for one file; then one line sums up the rest


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with stack_for(tmp_path_factory.mktemp("import_fidelity"), {"alice": False},
                   IMPORT_MAX_BYTES=str(16 * 2**20)) as run:
        run.start()
        yield run


def _zip(members: dict[str, object]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in members.items():
            zf.writestr(name, value if isinstance(value, bytes) else json.dumps(value, indent=2))
    return out.getvalue()


def _session_speakers(system: System, event_id: int) -> dict[str, list[str]]:
    """Session title -> names of its linked speakers, from the database."""
    with system.env.db() as session:
        rows = session.execute(
            sa.select(m.Session.title, m.Speaker.name)
            .join(m.SessionSpeaker, m.SessionSpeaker.session_id == m.Session.id)
            .join(m.Speaker, m.Speaker.id == m.SessionSpeaker.speaker_id)
            .where(m.Session.event_id == event_id).order_by(m.Session.id, m.SessionSpeaker.position))
        out: dict[str, list[str]] = collections.defaultdict(list)
        for title, name in rows:
            out[title].append(name)
        return dict(out)


@pytest.fixture(scope="module")
def sample_imports(system):
    if not HAND_MADE:
        pytest.skip(f"samples not found at {SAMPLE_ROOT} (set SAMPLES_DIR to run these tests)")
    return import_all(system.client("alice"), SAMPLE_ROOT, HAND_MADE)


def test_every_hand_made_sample_imports_with_a_readable_warning_list(sample_imports):
    for name, task in sample_imports.items():
        assert task["state"] == "SUCCESS", (name, task)
        result = task["result"]
        per_file = collections.Counter((w["code"], w["file"]) for w in result["warnings"])
        assert max(per_file.values(), default=0) <= REPEATS, (name, per_file.most_common(3))
        summed = sum(int(w["message"].split(" in all)")[0].rsplit("(", 1)[1]) - REPEATS
                     for w in result["warnings"] if w["code"] == "more_warnings")
        more = sum(1 for w in result["warnings"] if w["code"] == "more_warnings")
        assert result["warnings_total"] == len(result["warnings"]) - more + summed, name  # counted, not lost
        for warning in result["warnings"]:
            assert warning["message"] and len(warning["message"]) < 600, warning
            if warning["file"] is not None:
                assert warning["message"].startswith(f"File {warning['file']}"), warning


def test_relations_follow_the_evidence_in_real_samples(system, sample_imports):
    google = sample_imports.get("dasherized/GoogleIO17")
    if google is None:
        pytest.skip("GoogleIO17 sample absent")
    talk = "Designing for the Next Billion Users: Accessibility UX Insights from the Developing World"
    # The session names "Astrid Weber" with Victor Tsaran's id; Astrid (who lists it) is linked.
    assert _session_speakers(system, google["result"]["id"])[talk] == ["Astrid Weber", "Nithya Sambasivan"]
    conflicts = [w for w in google["result"]["warnings"] if w["code"] == "relation_conflict"]
    assert {"file": "sessions", "record_id": 1004, "field": "speakers", "given": 5, "chosen": 3}.items() <= \
        next(w for w in conflicts if w["record_id"] == 1004).items()
    mozilla = sample_imports["dasherized/MozillaAllHands17"]["result"]
    linked = _session_speakers(system, mozilla["id"])
    assert set(linked["Denelle's All Org Team Session"]) == {"Denelle Dixon"}  # not Sean Rich, whose id it gave
    assert next(w for w in mozilla["warnings"] if w["code"] == "timezone_normalized")["message"] == \
        "File event, ID 173: timezone 'US/Pacific' is read as 'America/Los_Angeles'"
    with system.env.db() as session:
        assert session.get(m.Event, mozilla["id"]).timezone == "America/Los_Angeles"


def messy_archive() -> dict[str, object]:
    """A hand-made (2016 layout) archive with a bit of every kind of mess."""
    files = base_files()
    files["event"]["timezone"] = "US / Pacific"
    files["speakers"].append({"id": 3, "name": "Cleo", "organisation": "X", "photo": "null", "sessions": []})
    files["speakers"].append({"id": 4, "name": None, "sessions": []})  # cannot be repaired
    files["speakers"][0]["photo"] = "null"
    files["sessions"][1]["speakers"] = [{"id": 3, "name": "Bob Babbage", "organisation": "Engines"}]  # Cleo's id
    files["sessions"][0]["session_type"] = {"id": 7, "length": 0.5, "name": "Half hour"}  # 09:00-09:30, rebuilt
    files["sessions"].append({"id": 3, "title": None, "start_time": "2024-05-01T11:00:00"})  # cannot be repaired
    files["sessions"].append({"id": 4, "title": "Someday", "start_time": "tbd", "speakers": [],
                              "track": "Main"})  # repaired: no start time, no track
    del files["session_types"]
    members: dict[str, object] = {f"{k}.json": v for k, v in files.items()}
    members["forms.json"] = b'[{"id": 1, "session_form": "{}",]'  # broken, and nothing depends on it
    return members


def test_a_messy_archive_imports_with_every_repair_named(system):
    alice = system.client("alice")
    task = alice.wait_task(submit_ok(alice, _zip(messy_archive()), "messy.zip"), timeout=60)
    assert task["state"] == "SUCCESS", task
    result = task["result"]
    warnings = {(w["code"], w["file"], w["record_id"], w["field"]) for w in result["warnings"]}
    assert {
        ("record_skipped", "speakers", 4, "name"),
        ("record_skipped", "sessions", 3, "title"),
        ("invalid_value", "sessions", 4, "start_time"),
        ("invalid_value", "sessions", 4, "track"),
        ("relation_conflict", "sessions", 2, "speakers"),
        ("file_ignored", "forms", None, None),
        ("timezone_normalized", "event", 1, "timezone"),
        ("length_decimal_hours", "session_types", None, "length"),
    } <= warnings, sorted(warnings)
    assert not [w for w in result["warnings"] if w["field"] == "photo"]  # "null" is no media, and no warning
    assert result["counts"]["sessions"] == 3 and result["counts"]["speakers"] == 3 and result["counts"]["forms"] == 0
    event_id = result["id"]
    assert _session_speakers(system, event_id)["Talk two"] == ["Bob Babbage"]
    with system.env.db() as session:
        assert session.get(m.Event, event_id).timezone == "America/Los_Angeles"
        types = session.execute(sa.select(m.SessionType.name, m.SessionType.length)
                                .where(m.SessionType.event_id == event_id)).all()
        assert sorted(types) == [("Half hour", "00:30"), ("Talk", "00:30")]  # 0.5 h and 0.3 (HH.MM): 30 minutes
        photos = session.scalars(sa.select(m.Speaker.photo).where(m.Speaker.event_id == event_id)).all()
        assert photos == [None, None, None]


def test_strict_import_fails_listing_every_problem_and_writes_nothing(system):
    alice = system.client("alice")
    before = row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)
    r = alice.post(IMPORT_PATH + "?strict=true", files={"file": ("messy.zip", _zip(messy_archive()))})
    assert r.status_code == 202, r.text
    task = alice.wait_task(r.json()["task_url"], timeout=60)
    assert task["state"] == "FAILURE", task
    result = task["result"]
    problems = {(e["code"], e["file"], e["record_id"]) for e in result["errors"]}
    assert {("invalid_json", "forms", None), ("missing_field", "speakers", 4), ("missing_field", "sessions", 3),
            ("invalid_datetime", "sessions", 4), ("wrong_type", "sessions", 4)} <= problems, problems
    assert result["errors_total"] == len(result["errors"]) >= 5
    first = result["errors"][0]
    assert {k: result[k] for k in first} == first  # the first problem stays at the top level
    assert row_counts(system.env.database_url, exclude=NOT_EVENT_DATA) == before


def test_strict_must_be_true_or_false(system):
    r = system.client("alice").post(IMPORT_PATH + "?strict=maybe", files={"file": ("a.zip", _zip({"x": b"1"}))})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_parameter", r.text

