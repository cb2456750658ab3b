"""Pure logic behind issue 9 items 6 and 10: JSON bodies, archive text and dates, quotas, crash leftovers.

The end-to-end tests (test_bad_input_e2e, test_quotas_e2e) drive the same code through the services; these pin the
details (which code, which field path) without a broker.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from services.api_gateway.quotas import ByteBudget, load_quota_settings
from services.importer import scratch
from services.storage.retention import purge_partial_uploads
from shared.archive.checks import check_event
from shared.archive.jsonstream import iter_array, load_object
from shared.archive.reader import ArchiveLimits
from shared.archive.safezip import ArchiveError
from shared.http import ApiError, parse_json


@pytest.mark.parametrize(("raw", "code"), [
    (b'{"a": "\\udc00x"}', "invalid_text"),
    # NUL: PostgreSQL refuses it in text (a login with one was a 500 there; found by the contract fuzzing)
    (b'{"email": "\\u0000a@example.org", "password": "x"}', "invalid_text"),
    (b'{"config": {"\\u0000": "x"}}', "invalid_text"),
    (b'{"a": ["ok", {"\\ud800": 1}]}', "invalid_text"),
    (b'{"a": "\xed\xa0\x80"}', "invalid_encoding"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    (b"[" * 40 + b"]" * 40, "too_deep"),
    (b'{"a": ', "invalid_json"),
])
def test_parse_json_refuses_with_a_precise_code(raw, code):
    with pytest.raises(ApiError) as info:
        parse_json(raw)
    assert info.value.status == 400 and info.value.code == code, info.value


def test_parse_json_accepts_real_text():
    assert parse_json(b'\xef\xbb\xbf{"name": "J\xc3\xbcrgen \xf0\x9f\x98\x80"}') == {"name": "J\u00fcrgen \U0001f600"}
    assert parse_json(b"  ") is None


def _error(fn) -> dict:
    with pytest.raises(ArchiveError) as info:
        fn()
    return info.value.to_dict()


def test_archive_bytes_that_are_not_utf8_name_record_and_field():
    data = b'[{"id": 1, "name": "a"}, {"id": 7, "color": "\xed\xa0\x80"}]'
    error = _error(lambda: list(iter_array(io.BytesIO(data), "tracks", ArchiveLimits())))
    assert (error["code"], error["file"], error["record_id"], error["field"]) == ("invalid_text", "tracks", 7, "color")


def test_archive_lone_surrogates_name_the_nested_field():
    data = b'[{"id": 3, "tags": [{"a": 1}, {"b": "\\udc00"}]}]'
    error = _error(lambda: list(iter_array(io.BytesIO(data), "sessions", ArchiveLimits())))
    assert (error["code"], error["record_id"], error["field"]) == ("invalid_text", 3, "tags.1.b")
    error = _error(lambda: load_object(io.BytesIO(b'{"id": 1, "name": "x\\udc00"}'), "event", ArchiveLimits()))
    assert (error["code"], error["file"], error["field"]) == ("invalid_text", "event", "name")


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_dates_beyond_the_calendar_once_in_utc_are_refused(value):
    event = {"id": 1, "name": "E", "start_time": "2024-01-01T00:00:00", "end_time": value}
    error = _error(lambda: check_event(event, lambda *a, **k: None))
    assert (error["code"], error["field"]) == ("invalid_datetime", "end_time")
    assert "outside the years 1 to 9999" in error["message"]


def test_byte_budget_refuses_at_start_and_at_the_crossing_byte():
    ByteBudget(0, 10**12).check_start(10**12)  # no quota
    with pytest.raises(ApiError) as info:
        ByteBudget(100, 100).check_start(None)
    assert (info.value.status, info.value.code) == (413, "quota_exceeded")
    budget = ByteBudget(100 * 1024, 0)
    budget.check_start(100 * 1024)
    assert b"".join(budget.meter(iter([b"x" * 60 * 1024]))) == b"x" * 60 * 1024
    with pytest.raises(ApiError):  # the same budget across files of one request
        list(budget.meter(iter([b"y" * 30 * 1024, b"y" * 20 * 1024])))


def test_quota_settings_from_the_environment():
    settings = load_quota_settings({"QUOTA_JOBS_IN_FLIGHT": "3", "QUOTA_STORED_BYTES": "0",
                                    "IMPORT_ARCHIVE_KEEP_DAYS": "0.5"})
    assert (settings.jobs_in_flight, settings.stored_bytes, settings.import_archive_keep_seconds) == (3, 0, 43200)
    with pytest.raises(ValueError):
        load_quota_settings({"IMPORT_ARCHIVE_KEEP_DAYS": "0"})


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_scratch_sweep_removes_only_directories_no_live_job_holds(tmp_path):
    root = tmp_path / "scratch"
    with scratch.job_scratch(root, "live-task") as live:
        (live / "archive.zip").write_bytes(b"x")
        crashed = root / "dead-task-abc"
        crashed.mkdir()
        (crashed / scratch.LOCK_NAME).write_bytes(b"")
        young = root / "starting-task"  # between mkdtemp and flock
        young.mkdir()
        old = root / "pre-lock-version"
        old.mkdir()
        _age(old, scratch.UNLOCKED_GRACE + 60)
        assert scratch.sweep(root) == 2
        assert live.exists() and young.exists() and not crashed.exists() and not old.exists()
    assert not live.exists()


def test_partial_uploads_are_purged_once_untouched_long_enough(tmp_path):
    stale = tmp_path / "objects" / "ab" / ".tmp-dead"
    fresh = tmp_path / "backends" / "team" / "objects" / "cd" / ".tmp-live"
    kept = tmp_path / "objects" / "ab" / "0123.json"
    for path in (stale, fresh, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    _age(stale, 3600)
    _age(kept, 3600)
    assert purge_partial_uploads(tmp_path, older_than=600) == 1
    assert not stale.exists() and fresh.exists() and kept.exists()
