"""Malformed records and broken files (issue 8 items 8 and 9): in hand-made variants a record that cannot be repaired
is skipped and a broken optional file ignored, each with a warning naming it; ``strict`` (and the legacy format, and
the event record) turn every such problem into a failure, and a failure lists every problem found, not the first."""

from __future__ import annotations

import pytest

from shared.archive.reader import ArchiveError, open_archive, validate_archive
from tests.support.hostile_archives import base_files, encode, write_zip


def hand_made(files: dict) -> dict:
    return {f"{name}.json": value for name, value in files.items()}


def messy() -> dict:
    """A hand-made archive with one bad record in three files and two repairable values."""
    files = base_files()
    files["speakers"].append({"id": 3, "name": None, "sessions": []})  # no name: cannot be repaired
    files["sponsors"].append("Acme")  # not an object
    files["tracks"].append({"name": "No id"})  # no id
    files["sessions"][0]["start_time"] = "tbd"  # repaired: no start time
    files["sessions"][1]["speakers"].append(["Bob"])  # repaired: the entry is left out
    return hand_made(files)


def _open(tmp_path, members: dict, name: str, **kwargs):
    return open_archive(write_zip(tmp_path / name, encode(members)), **kwargs)


def test_unrepairable_records_are_skipped_and_named(tmp_path):
    with _open(tmp_path, messy(), "messy.zip") as archive:
        counts = validate_archive(archive)
        assert (counts["speakers"], counts["sponsors"], counts["tracks"], counts["sessions"]) == (2, 1, 1, 2)
        skipped = {(w["file"], w["record_id"]): w["message"] for w in archive.warnings if w["code"] == "record_skipped"}
        assert skipped == {
            ("speakers", 3): "File speakers, ID 3: name is missing; the record is skipped",
            ("sponsors", None):
                "File sponsors: record #2: expected a JSON object, found a string; the record is skipped",
            ("tracks", None): "File tracks: record #2: id is missing; the record is skipped",
        }
        repaired = {(w["file"], w["record_id"], w["field"]) for w in archive.warnings if w["code"] == "invalid_value"}
        assert repaired == {("sessions", 1, "start_time"), ("sessions", 2, "speakers")}
        sessions = list(archive.records("sessions"))
        assert sessions[0]["start_time"] is None and [s["id"] for s in sessions[1]["speakers"]] == [2]
        assert [r["id"] for r in archive.records("speakers")] == [1, 2]


def test_strict_fails_listing_every_problem(tmp_path):
    members = messy()
    members["sessions.json"][0]["track"] = "Main"  # a second problem in the same record
    with _open(tmp_path, members, "strict.zip", strict=True) as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    error = caught.value
    found = [(e["code"], e["file"], e["record_id"], e["field"]) for e in error.errors]
    assert found == [
        ("missing_field", "tracks", None, "id"),
        ("missing_field", "speakers", 3, "name"),
        ("wrong_type", "sponsors", None, None),
        ("invalid_datetime", "sessions", 1, "start_time"),
        ("wrong_type", "sessions", 1, "track"),
        ("wrong_type", "sessions", 2, "speakers"),
    ]
    assert error.errors[4]["message"] == "File sessions, ID 1: track is a string, which names no record"
    assert error.errors_total == 6
    assert error.to_dict() == error.errors[0]  # the first problem stays the error itself


def test_legacy_archives_stay_strict_and_report_all_problems(tmp_path):
    files = base_files()
    files["speakers"][0]["name"] = None
    files["sessions"][1]["end_time"] = "later"
    files["sessions"][0]["track"] = {"id": 99, "name": "Ghost"}
    with _open(tmp_path, files, "legacy.zip") as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert [(e["file"], e["record_id"], e["code"]) for e in caught.value.errors] == [
        ("speakers", 1, "missing_field"), ("sessions", 2, "invalid_datetime"), ("sessions", 1, "unknown_reference")]
    # A broken speaker is still a speaker: the sessions naming it are not reported on top.


def test_the_number_of_problems_listed_is_capped_and_the_total_counted(tmp_path):
    files = base_files()
    files["sponsors"] = [{"id": i, "name": f"S{i}", "logo": 5} for i in range(1, 251)]
    with _open(tmp_path, files, "many.zip") as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert len(caught.value.errors) == 100 and caught.value.errors_total == 250  # reader.MAX_ERRORS


def test_event_record_is_never_repaired(tmp_path):
    files = base_files()
    files["event"]["start_time"] = "soon"
    with _open(tmp_path, hand_made(files), "event.zip") as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert (caught.value.code, caught.value.file, caught.value.errors_total) == ("invalid_datetime", "event", 1)


@pytest.mark.parametrize("file", ["session_types", "forms", "sponsors", "microlocations", "tracks"])
def test_a_broken_optional_file_is_ignored_with_a_warning(tmp_path, file):
    members = encode(hand_made(base_files()))
    members[f"{file}.json"] = b'[{"id": 1, "name": "oops",]'
    with _open(tmp_path, members, f"{file}.zip") as archive:
        counts = validate_archive(archive)
        (warning,) = [w for w in archive.warnings if w["code"] == "file_ignored"]
        assert warning["file"] == file and "invalid JSON" in warning["message"]
        assert "ignored as if it were absent" in warning["message"]
        if file in ("session_types", "microlocations", "tracks"):  # the sessions refer to them: rebuilt
            assert counts[file] == 1 and next(archive.records(file))["id"] == 1
            assert "synthesized_records" in {w["code"] for w in archive.warnings if w["file"] == file}
        else:
            assert counts[file] == 0
        assert counts["sessions"] == 2


def test_broken_core_files_and_strict_imports_still_fail(tmp_path):
    members = encode(hand_made(base_files()))
    members["speakers.json"] = b"[{"
    members["meta.json"] = b"{nope"
    with _open(tmp_path, members, "core.zip") as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert [(e["code"], e["file"]) for e in caught.value.errors] == [("invalid_json", "speakers")]
    members = encode(hand_made(base_files()))
    members["forms.json"] = b"[{"
    with _open(tmp_path, members, "strict.zip", strict=True) as archive, pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert (caught.value.code, caught.value.file) == ("invalid_json", "forms")


def test_records_sharing_an_id_that_nothing_tells_apart(tmp_path):
    files = base_files()
    files["tracks"] = [{"id": 1, "name": "Main"}, {"id": 1, "name": "Main", "color": "#fff"}]
    for session in files["sessions"]:
        session["track"] = {"id": 1, "name": "Main"}
    with _open(tmp_path, hand_made(files), "dup.zip") as archive:
        validate_archive(archive)  # the first of them is linked, and that is reported
        conflicts = [w for w in archive.warnings if w["code"] == "relation_conflict"]
        assert [(w["record_id"], w["given"], w["chosen"]) for w in conflicts] == [(1, 1, 1), (2, 1, 1)]
        assert {s["track"]["id"] for s in archive.records("sessions")} == {1}
    with _open(tmp_path, hand_made(files), "dup-strict.zip", strict=True) as archive, \
            pytest.raises(ArchiveError) as caught:
        validate_archive(archive)
    assert [e["code"] for e in caught.value.errors] == ["duplicate_id", "duplicate_id"]


def test_a_session_keeps_a_skipped_speaker_rebuilt_from_its_snapshot(tmp_path):
    files = base_files()
    files["speakers"][1]["name"] = 42  # Bob cannot be used; session 2 still names him
    files["sponsors"][0]["id"] = 1.0  # a float id is still an id
    with _open(tmp_path, hand_made(files), "rebuilt.zip") as archive:
        counts = validate_archive(archive)
        assert counts["sponsors"] == 1 and next(archive.records("sponsors"))["id"] == 1
        speakers = {r["id"]: r for r in archive.records("speakers")}
        assert speakers[2]["name"] == "Bob Babbage" and "email" not in speakers[2]
        messages = [w["message"] for w in archive.warnings if w["file"] == "speakers"]
        assert "File speakers, ID 2: name must be a string, not a number; the record is skipped" in messages
        assert ("File speakers: 1 record(s) rebuilt from the sessions' relations (ids missing from the file, "
                "or skipped): id 2") in messages
