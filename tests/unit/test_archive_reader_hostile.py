"""Hostile archives end in a clear ArchiveError (code, file), before anything would be written."""

from __future__ import annotations

import pytest

from shared.archive.reader import ArchiveError, ArchiveLimits, open_archive, validate_archive
from tests.support.hostile_archives import hostile_cases, hostile_specs, valid_archive

SPECS = {spec.name: spec for spec in hostile_specs()}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return {case.name: case for case in hostile_cases(tmp_path_factory.mktemp("hostile"))}


def outcome(case) -> ArchiveError | None:
    try:
        with open_archive(case.path, case.limits or ArchiveLimits()) as archive:
            validate_archive(archive)
            for _ in archive.records("sessions"):
                pass
    except ArchiveError as exc:
        return exc
    return None


def test_the_base_archive_is_valid(tmp_path):
    with open_archive(valid_archive(tmp_path)) as archive:
        assert validate_archive(archive)["sessions"] == 2
        assert archive.warnings == []


def test_there_are_enough_cases_and_they_stay_small(cases):
    assert len(cases) == len(SPECS) >= 50
    for case in cases.values():
        if case.path.is_file():
            assert case.path.stat().st_blocks * 512 < 4 * 2**20, case.name  # sparse files count as what they use


@pytest.mark.parametrize("name", list(SPECS))
def test_hostile_archive_ends_in_its_error(name, cases):
    case = cases[name]
    error = outcome(case)
    assert error is not None, f"{name}: no error"
    assert (error.code, error.file) == (case.expected_code, case.expected_file), error.message
    assert set(error.to_dict()) == {"code", "message", "file", "record_id", "field"}
    if case.expected_file is not None:
        assert error.message.startswith(f"File {case.expected_file}"), error.message
    assert len(error.message) < 400, error.message


def test_relation_errors_name_record_and_field(cases):
    by_name = cases
    error = outcome(by_name["unknown_track"])
    assert error.to_dict() == {"code": "unknown_reference", "message": "File sessions, ID 1: track 99 does not exist",
                               "file": "sessions", "record_id": 1, "field": "track"}
    error = outcome(by_name["unknown_speaker"])
    assert (error.record_id, error.field) == (1, "speakers")
    assert error.message == "File sessions, ID 1: speaker 77 does not exist"
    error = outcome(by_name["id_as_string"])
    assert (error.record_id, error.field) == ("x", "id")
    error = outcome(by_name["session_title_missing"])
    assert (error.record_id, error.field) == (2, "title")
