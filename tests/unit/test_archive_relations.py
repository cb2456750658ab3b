"""Hand-made archives whose nested references contradict the records they name (issue 8 item 7): conclusive evidence
(the name and the other side's back reference agree on another record) is followed, anything else kept and reported,
stale names alone are not evidence, and legacy archives are left exactly as they are."""

from __future__ import annotations

from shared.archive.reader import open_archive, validate_archive
from tests.support.hostile_archives import base_files, encode, write_zip


def hand_made(files: dict) -> dict:
    """The 2016 layout (``.json`` names): a hand-made variant the reader repairs."""
    return {f"{name}.json": value for name, value in files.items()}


def three_speakers() -> dict:
    """Session 1 by Ada (1), session 2 by Bob (2), speaker 3 Cleo without sessions."""
    files = base_files()
    files["speakers"].append({"id": 3, "name": "Cleo", "organisation": "X", "photo": None, "sessions": []})
    return files


def read(tmp_path, files: dict, name: str = "a.zip") -> tuple[dict, list]:
    with open_archive(write_zip(tmp_path / name, encode(files))) as archive:
        validate_archive(archive)
        records = {file: list(archive.records(file)) for file in ("sessions", "speakers", "tracks")}
        return records, [w for w in archive.warnings if w["code"] == "relation_conflict"]


def speakers_of(records: dict, session_id: int) -> list[int]:
    return [s["id"] for s in next(r for r in records["sessions"] if r["id"] == session_id)["speakers"]]


def test_name_and_back_reference_pointing_elsewhere_are_followed(tmp_path):
    files = three_speakers()
    # Session 2 names Bob with Cleo's id 3; Cleo does not list it, Bob (2) does.
    files["sessions"][1]["speakers"] = [{"id": 3, "name": "Bob Babbage", "organisation": "Engines"}]
    records, warnings = read(tmp_path, hand_made(files))
    assert speakers_of(records, 2) == [2]
    assert len(warnings) == 1, warnings
    w = warnings[0]
    assert (w["file"], w["record_id"], w["field"], w["given"], w["chosen"]) == ("sessions", 2, "speakers", 3, 2)
    assert "speaker 3 is 'Cleo' and does not list this session" in w["message"]
    assert "linked to speaker 2" in w["message"]
    # The same files in the legacy layout are taken as they are (the round trip needs them byte for byte).
    records, warnings = read(tmp_path, files, "legacy.zip")
    assert speakers_of(records, 2) == [3] and warnings == []


def test_a_misspelt_name_counts_only_with_the_back_reference(tmp_path):
    files = three_speakers()
    files["sessions"][1]["speakers"] = [{"id": 3, "name": "Bob Babage", "organisation": "Engines"}]
    records, warnings = read(tmp_path, hand_made(files))
    assert speakers_of(records, 2) == [2] and warnings[0]["chosen"] == 2
    # Without the back reference the misspelling is no evidence: kept, and reported.
    files["speakers"][1]["sessions"] = []
    records, warnings = read(tmp_path, hand_made(files), "b.zip")
    assert speakers_of(records, 2) == [3]
    assert [(w["given"], w["chosen"]) for w in warnings if w["file"] == "sessions"] == [(3, 3)]
    assert "check this link" in warnings[0]["message"]


def test_inconclusive_evidence_keeps_the_id_and_warns(tmp_path):
    files = three_speakers()
    # The name points to Bob, but nobody lists the session: keep Cleo, say so.
    files["sessions"][1]["speakers"] = [{"id": 3, "name": "Bob Babbage", "organisation": "Engines"}]
    files["speakers"][1]["sessions"] = []
    records, warnings = read(tmp_path, hand_made(files))
    assert speakers_of(records, 2) == [3]
    assert [(w["record_id"], w["given"], w["chosen"]) for w in warnings] == [(2, 3, 3)]
    assert "speaker 2 'Bob Babbage' has that name" in warnings[0]["message"]
    # Once Cleo lists the session her id is confirmed, whoever else claims it or carries the name.
    files["speakers"][2]["sessions"] = [{"id": 2, "title": "Talk two"}]
    files["speakers"].append({"id": 4, "name": "Dan", "organisation": "Y", "photo": None,
                              "sessions": [{"id": 2, "title": "Talk two"}]})
    records, warnings = read(tmp_path, hand_made(files), "b.zip")
    assert speakers_of(records, 2) == [3]
    assert not [w for w in warnings if w["file"] == "sessions"]


def test_tracks_are_checked_against_the_sessions_they_list(tmp_path):
    files = base_files()
    files["tracks"] = [
        {"id": 1, "name": "Main", "color": "#000000", "sessions": [{"id": 1, "title": "Talk one"}]},
        {"id": 2, "name": "Side", "color": "#ffffff", "sessions": [{"id": 2, "title": "Talk two"}]},
    ]
    files["sessions"][1]["track"] = {"id": 1, "name": "Side"}  # names Side with Main's id
    records, warnings = read(tmp_path, hand_made(files))
    assert records["sessions"][1]["track"]["id"] == 2
    assert [(w["field"], w["given"], w["chosen"]) for w in warnings] == [("track", 1, 2)]


def test_a_missing_id_follows_conclusive_evidence_instead_of_rebuilding_a_duplicate(tmp_path):
    files = three_speakers()
    files["sessions"][1]["speakers"] = [{"id": 99, "name": "Bob Babbage", "organisation": "Engines"}]
    records, warnings = read(tmp_path, hand_made(files))
    assert speakers_of(records, 2) == [2]
    assert [s["id"] for s in records["speakers"]] == [1, 2, 3]  # no speaker 99 rebuilt from the snapshot
    assert [(w["given"], w["chosen"]) for w in warnings] == [(99, 2)]


def test_a_back_reference_the_session_does_not_confirm_is_reported(tmp_path):
    files = three_speakers()
    files["speakers"][2]["sessions"] = [{"id": 1, "title": "Talk one"}]  # Cleo claims Ada's session
    records, warnings = read(tmp_path, hand_made(files))
    assert speakers_of(records, 1) == [1]
    assert [(w["file"], w["record_id"], w["field"], w["given"]) for w in warnings] == [("speakers", 3, "sessions", [1])]
    assert "session 1 (speaker 1), which does not name this speaker" in warnings[0]["message"]
