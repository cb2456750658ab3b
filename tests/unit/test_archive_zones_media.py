"""Hand-made archives (issue 8 item 11): time zone names with one obvious canonical form are read in it (with a
warning), never guessed; the text "null" in a media field means no media, without a warning per record."""

from __future__ import annotations

import pytest

from services.importer.media import plan_media
from shared.archive.reader import open_archive, validate_archive
from tests.support.hostile_archives import base_files, encode, write_zip


def _hand_made(tmp_path, files: dict, name: str = "a.zip"):
    return open_archive(write_zip(tmp_path / name, encode({f"{k}.json": v for k, v in files.items()})))


@pytest.mark.parametrize(("written", "canonical"), [
    ("US / Pacific", "America/Los_Angeles"),
    ("US/Pacific", "America/Los_Angeles"),
    ("asia/singapore", "Asia/Singapore"),
    ("America/New York", "America/New_York"),
    ("Asia/Calcutta", "Asia/Kolkata"),
    ("UTC+07:00", "Etc/GMT-7"),
])
def test_loose_and_deprecated_zone_names_have_one_canonical_form(written, canonical):
    from shared.archive.variants import canonical_zone

    assert canonical_zone(written) == canonical


@pytest.mark.parametrize("written", ["Europe/Berlin", "UTC", "Europe/Oslo", "Asia/Vietnum", "Pacific", "UTC+07:30"])
def test_canonical_or_unclear_names_are_left_alone(written):
    from shared.archive.variants import canonical_zone

    assert canonical_zone(written) is None  # canonical already, a typo, ambiguous, or not a whole-hour offset


def test_event_zone_is_normalised_and_offsets_read_in_it(tmp_path):
    files = base_files()
    files["event"]["timezone"] = "US / Pacific"
    files["sessions"][0]["start_time"] = "2024-05-01T16:00:00+00:00"  # 09:00 in Los Angeles (PDT)
    with _hand_made(tmp_path, files) as archive:
        validate_archive(archive)
        assert archive.event()["timezone"] == "America/Los_Angeles"
        assert next(archive.records("sessions"))["start_time"] == "2024-05-01T09:00:00"
        codes = [w["code"] for w in archive.warnings]
        assert "unknown_timezone" not in codes and "offset_without_timezone" not in codes
        (warning,) = [w for w in archive.warnings if w["code"] == "timezone_normalized"]
        assert warning["message"] == "File event, ID 1: timezone 'US / Pacific' is read as 'America/Los_Angeles'"


def test_the_text_null_is_no_media(tmp_path):
    files = base_files()
    for speaker in files["speakers"]:
        speaker["photo"] = "null"
    files["sponsors"][0]["logo"] = "NULL"
    with _hand_made(tmp_path, files) as archive:
        validate_archive(archive)
        plan = plan_media(archive, "task", "http://gw")
        assert plan.warnings == [] and plan.uploads == {}
        assert [plan.rewrite("speakers", r)["photo"] for r in archive.records("speakers")] == [None, None]
        assert plan.rewrite("sponsors", next(archive.records("sponsors")))["logo"] is None
