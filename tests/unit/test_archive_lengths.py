"""Numeric session type lengths in hand-made archives (issue 8 item 10): ``0.5`` may be HH.MM (50 minutes, the legacy
reading) or decimal hours (30 minutes); the durations of the sessions using the type decide, and every length comes
out as one canonical ``"HH:MM"`` text."""

from __future__ import annotations

from shared.archive.reader import open_archive, validate_archive
from tests.support.hostile_archives import base_files, encode, write_zip


def _session(session_id: int, type_id: int, length: object, start: str, end: str) -> dict:
    return {"id": session_id, "title": f"Talk {session_id}", "start_time": start, "end_time": end,
            "session_type": {"id": type_id, "length": length, "name": f"Type {type_id}"},
            "track": None, "microlocation": None, "speakers": []}


def _types(tmp_path, files: dict, name: str) -> tuple[dict, list]:
    members = encode({f"{k}.json": v for k, v in files.items()})  # the 2016 layout: a hand-made variant
    with open_archive(write_zip(tmp_path / name, members)) as archive:
        validate_archive(archive)
        types = {r["id"]: r["length"] for r in archive.records("session_types")}
        return types, archive.warnings


def test_rebuilt_session_types_read_numeric_lengths_by_their_sessions_durations(tmp_path):
    files = base_files()
    del files["session_types"]  # rebuilt from the sessions' snapshots
    for speaker in files["speakers"]:
        speaker["sessions"] = []
    files["tracks"][0]["sessions"] = []
    files["sessions"] = [
        _session(1, 1, 0.5, "2024-05-01T09:00:00", "2024-05-01T09:30:00"),  # 30 min: decimal hours
        _session(2, 2, 3.25, "2024-05-01T10:00:00", "2024-05-01T13:15:00"),  # 195 min: decimal hours
        _session(3, 3, 0.3, "2024-05-01T14:00:00", "2024-05-01T14:30:00"),  # 30 min: HH.MM
        _session(4, 4, 1.3, "2024-05-01T15:00:00", "2024-05-01T16:00:00"),  # 60 min: neither (kept HH.MM)
        _session(5, 5, 1, "2024-05-01T16:00:00", "2024-05-01T17:00:00"),  # both readings agree
    ]
    types, warnings = _types(tmp_path, files, "rebuilt.zip")
    assert types == {1: "00:30", 2: "03:15", 3: "00:30", 4: "01:30", 5: "01:00"}
    assert all(isinstance(v, str) for v in types.values())  # one form in the file, no floats among strings
    by_code = {w["code"]: w for w in warnings}
    assert "session type 1: 0.5 -> 00:30 (30 min)" in by_code["length_decimal_hours"]["message"]
    assert "session type 2: 3.25 -> 03:15 (195 min)" in by_code["length_decimal_hours"]["message"]
    assert "session type 4: 1.3 -> 01:30 (60 min)" in by_code["length_ambiguous"]["message"]
    assert by_code["length_ambiguous"]["message"].startswith("File session_types: 1 numeric length ")


def test_numeric_lengths_in_the_session_types_file_are_read_the_same_way(tmp_path):
    files = base_files()
    files["session_types"] = [{"id": 1, "name": "Talk", "length": 0.5}, {"id": 2, "name": "Long", "length": "00.50"}]
    for session in files["sessions"]:
        session["session_type"] = {"id": 1, "length": 0.5, "name": "Talk"}  # both sessions last 30 minutes
    types, warnings = _types(tmp_path, files, "file.zip")
    assert types == {1: "00:30", 2: "00:50"}
    assert [w["code"] for w in warnings if w["code"].startswith("length_")] == ["length_decimal_hours",
                                                                                "length_ambiguous"]


def test_decide_length_never_guesses():
    from shared.archive.variants import decide_length

    assert decide_length(0.5, {30: 3, 50: 3}) == ("00:50", "default")  # a tie keeps the documented reading
    assert decide_length(0.75, {}) == ("00:45", "decimal")  # 75 minutes cannot be HH.MM
    assert decide_length("01:30", {}) == (None, "unreadable")  # not numeric: left to the caller
