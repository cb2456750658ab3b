"""Bad input against a running stack (issue 9 item 10): each gets a precise 4xx, or inside an archive an import
FAILURE naming file, record and field; never ``internal_error``, never a 500, and the database is unchanged.

Table-driven: ``HTTP_CASES`` are requests to the gateway and the storage data plane, ``ARCHIVE_CASES`` archives
uploaded for import (cases that already answered precisely before, a 20-digit task id, a negative ``sub``, a PUT
to an invalid key, a surrogate in an export option's name, are left out). The stack's logs must not show an
unhandled error for any of them either.
"""

from __future__ import annotations

import copy
import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests

from shared.signing import signed_query
from tests.e2e.test_import_e2e import NOT_EVENT_DATA
from tests.support.e2e import Client, SystemBase, stack_for
from tests.support.hostile_archives import base_files
from tests.support.import_helpers import row_counts, submit

HUGE_ID = "9" * 20
DEEP = 100_000


@dataclass
class System(SystemBase):
    alice: Client
    admin: Client
    event_id: int

    @property
    def secret(self) -> bytes:
        return self.env.link_key


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with stack_for(tmp_path_factory.mktemp("bad_input"), {"alice": False, "root": True}) as run:
        event_id = run.event("alice", sessions=3)
        run.start()
        yield System(env=run.env, users=run.users, alice=run.client("alice"), admin=run.client("root"),
                     event_id=event_id)


def _token(system: System, sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600}, system.secret, algorithm="HS256")


def _storage_link(system: System, method: str, raw_key: str) -> str:
    """A link signed with the real secret for a key storage must refuse (what a leaked secret or a bug yields)."""
    query = signed_query(system.secret, method, raw_key, int(time.time()) + 600)
    return f"{system.storage}/objects/{quote(raw_key, safe='/')}?{query}"


@dataclass(frozen=True)
class HttpCase:
    name: str
    send: Callable[[System], requests.Response]
    status: int
    code: str | tuple[str, ...]


def _post_raw(path: str, body: bytes, who: str = "alice") -> Callable[[System], requests.Response]:
    def send(system: System) -> requests.Response:
        client = getattr(system, who)
        return client.post(path.format(event=system.event_id), data=body,
                           headers={"Content-Type": "application/json"})
    return send


def _get(path: str, token: Callable[[System], str] | None = None) -> Callable[[System], requests.Response]:
    def send(system: System) -> requests.Response:
        headers = {"Authorization": f"Bearer {token(system)}"} if token else {}
        if token is None:
            return system.alice.get(path.format(event=system.event_id))
        return requests.get(system.url + path.format(event=system.event_id), headers=headers, timeout=30)
    return send


def _storage(method: str, raw_key: str) -> Callable[[System], requests.Response]:
    def send(system: System) -> requests.Response:
        return requests.request(method, _storage_link(system, method, raw_key), timeout=30,
                                data=b"x" if method == "PUT" else None)
    return send


LONE_SURROGATE = b'{"email": "\\udc00x@example.org", "password": "p"}'
RAW_SURROGATE = b'{"email": "\xed\xa0\x80@example.org", "password": "p"}'
NESTED = b"[" * DEEP + b"]" * DEEP

HTTP_CASES = [
    HttpCase("login: lone surrogate escape", _post_raw("/v1/auth/login", LONE_SURROGATE), 400, "invalid_text"),
    HttpCase("login: raw surrogate bytes ED A0 80", _post_raw("/v1/auth/login", RAW_SURROGATE), 400,
             "invalid_encoding"),
    HttpCase("login: nested 100,000 deep", _post_raw("/v1/auth/login", NESTED), 400, "too_deep"),
    HttpCase("export: nested 100,000 deep", _post_raw("/v1/events/{event}/export/json", NESTED), 400, "too_deep"),
    HttpCase("admin: lone surrogate in a backend record",
             _post_raw("/v1/admin/storage-backends",
                       b'{"storage_backend": "local", "storage_backend_id": "okid", "description": "\\udc00"}',
                       "admin"), 400, "invalid_text"),
    HttpCase("admin: raw surrogate bytes in a backend record",
             _post_raw("/v1/admin/storage-backends",
                       b'{"storage_backend": "local", "storage_backend_id": "rawid", "description": "\xed\xa0\x80"}',
                       "admin"),
             400, "invalid_encoding"),
    HttpCase("event: 20-digit id", _get(f"/v1/events/{HUGE_ID}"), 404, "not_found"),
    HttpCase("exports: 20-digit event id", _get(f"/v1/events/{HUGE_ID}/exports"), 404, "not_found"),
    HttpCase("download: 20-digit event id", _get(f"/v1/events/{HUGE_ID}/exports/abc"), 404, "not_found"),
    HttpCase("export: 20-digit event id", _post_raw(f"/v1/events/{HUGE_ID}/export/json", b"{}"), 404, "not_found"),
    HttpCase("token: 30-digit sub", _get("/v1/events", lambda s: _token(s, "1" * 30)), 401, "invalid_token"),
    HttpCase("token: zero-padded 30-digit sub", _get("/v1/events", lambda s: _token(s, "0" * 29 + "1" * 30)),
             401, "invalid_token"),
    # (keys a client would normalise on the way, "a/../b", "a/./b", reach storage as another key: 403 there.)
    HttpCase("storage GET: signed link, '..' in key", _storage("GET", "exports/a..b"), 400, "invalid_key"),
    HttpCase("storage GET: signed link, ';' in key", _storage("GET", "exports/a;b"), 400, "invalid_key"),
    HttpCase("storage GET: signed link, empty segment", _storage("GET", "exports//x"), 400, "invalid_key"),
    # A NUL in any path value names nothing on either server (and PostgreSQL refuses it in text): 404 before the route.
    HttpCase("storage GET: signed link, NUL in key", _storage("GET", "exports/a\x00b"), 404, "not_found"),
    HttpCase("storage GET: signed link, 5000-char key", _storage("GET", "exports/" + "a" * 5000), 400,
             "invalid_key"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.name for c in HTTP_CASES])
def test_bad_requests_get_a_precise_client_error(system, case):
    before = row_counts(system.env.database_url, exclude=("storage_objects",))
    r = case.send(system)
    assert r.status_code == case.status, (r.status_code, r.text[:500])
    error = r.json()["error"]
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    assert error["code"] in codes and error["message"], error
    assert row_counts(system.env.database_url, exclude=("storage_objects",)) == before


# --- archives -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchiveCase:
    name: str
    edit: Callable[[dict[str, Any]], None]
    file: str
    field: str | None
    record_id: Any = None
    raw: dict[str, bytes] = field(default_factory=dict)  # members written as these bytes


def _set(file: str, index: int | None, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(files: dict[str, Any]) -> None:
        target = files[file] if index is None else files[file][index]
        target[key] = value
    return edit


ARCHIVE_CASES = [
    ArchiveCase("event end 9999-12-31T23:59:59-14:00", _set("event", None, "end_time", "9999-12-31T23:59:59-14:00"),
                "event", "end_time", 1),
    ArchiveCase("event start 0001-01-01T00:00:00+14:00",
                _set("event", None, "start_time", "0001-01-01T00:00:00+14:00"), "event", "start_time", 1),
    ArchiveCase("session start 9999-12-31T23:59:59-14:00",
                _set("sessions", 1, "start_time", "9999-12-31T23:59:59-14:00"), "sessions", "start_time", 2),
    ArchiveCase("session end 0001-01-01T00:00:00+14:00",
                _set("sessions", 0, "end_time", "0001-01-01T00:00:00+14:00"), "sessions", "end_time", 1),
    ArchiveCase("speaker name with a lone surrogate", _set("speakers", 1, "name", "\udc00x"), "speakers", "name", 2),
    ArchiveCase("event name with a lone surrogate", _set("event", None, "name", "Event \udc00"), "event", "name", 1),
    ArchiveCase("track colour with raw ED A0 80", lambda files: None, "tracks", "color", 1,
                raw={"tracks": b'[{"id": 1, "name": "Main", "color": "\xed\xa0\x80", "sessions": []}]'}),
]


def _archive(case: ArchiveCase) -> bytes:
    files = copy.deepcopy(base_files())
    case.edit(files)
    # ASCII JSON: a lone surrogate travels as its \\u escape, as a JSON writer would put it.
    members = {name: json.dumps(value, indent=4).encode() for name, value in files.items()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in {**members, **case.raw}.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=[c.name for c in ARCHIVE_CASES])
def test_bad_archive_values_fail_the_import_naming_file_record_and_field(system, case):
    before = _event_rows(system)
    r = submit(system.alice, _archive(case))
    assert r.status_code == 202, r.text
    task = system.alice.wait_task(r.json()["task_url"], timeout=60)
    assert task["state"] == "FAILURE", task
    result = task["result"]
    assert result["code"] != "internal_error" and result["message"], result
    assert result["file"] == case.file, result
    if case.field is not None:
        assert result["field"] == case.field, result
    if case.record_id is not None:
        assert result["record_id"] == case.record_id, result
    assert _event_rows(system) == before


def _event_rows(system: System) -> dict[str, int]:
    """Rows of the event data (the task, its mail and the stored upload are the import's own records)."""
    return row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)


def test_no_unhandled_errors_were_logged(system):
    """Runs last: none of the cases above reached an unhandled-error path in any service."""
    text = system.log_text()
    for marker in ("unhandled error", "internal_error", 'HTTP/1.1" 500'):
        assert marker not in text, text[text.find(marker) - 2000:text.find(marker) + 2000]
