"""Quotas and clean-up on the real services (issue 9 item 6).

Per-user jobs in flight (429) and stored bytes (413), uploaded import archives that expire after the import ends,
and the leftovers of crashes: storage's ``.tmp-*`` upload parts and the importer's scratch directories, removed at
start-up and by the sweepers. Small limits and short intervals are set through the documented variables.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.storage.backends.local import LocalBackend
from services.storage.data_plane import signed_url
from shared.models.storage import StorageObject
from tests.support.e2e import Client, SystemBase, stack_for
from tests.support.hostile_archives import base_files
from tests.support.import_helpers import submit
from tools.stack import Stack

QUOTA_BYTES = 300 * 1024
JOBS = 2
KEEP_DAYS = 0.0001  # 8.6 s


@dataclass
class System(SystemBase):
    stack: Stack
    event_id: int

    @property
    def storage_dir(self) -> Path:
        return Path(self.env.env["STORAGE_DIR"])


def _old_file(path: Path, age: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by a crash")
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def _crashed_scratch(var_dir: Path) -> Path:
    """What an import killed mid-job leaves: its directory, its (no longer locked) lock file, the archive."""
    path = var_dir / "scratch" / f"{uuid.uuid4()}-x1y2"
    _old_file(path / ".lock")
    _old_file(path / "archive.zip")
    return path


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    users = {"alice": False, "bob": False, "carol": False, "dave": False}
    with stack_for(tmp_path_factory.mktemp("quotas"), users, QUOTA_STORED_BYTES=str(QUOTA_BYTES),
                   QUOTA_JOBS_IN_FLIGHT=str(JOBS), IMPORT_ARCHIVE_KEEP_DAYS=str(KEEP_DAYS),
                   STORAGE_SWEEP_INTERVAL="1", STORAGE_TMP_MAX_AGE="2", IMPORTER_SCRATCH_SWEEP_INTERVAL="1") as run:
        event_id = run.event("alice", sessions=3)
        # Leftovers of a crash before this start: an upload part in a shard, an import's scratch directory.
        _old_file(Path(run.env.env["STORAGE_DIR"]) / "objects" / "ab" / ".tmp-0123abandoned")
        _crashed_scratch(run.env.var_dir)
        yield System(env=run.env, users=run.users, stack=run.start(), event_id=event_id)


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in base_files().items():
            zf.writestr(name, json.dumps(value))
    return buffer.getvalue()


def _export(client: Client, event_id: int):
    return client.post(f"/v1/events/{event_id}/export/json", json={})


def test_jobs_in_flight_are_limited_per_user(system):
    alice, bob = system.client("alice"), system.client("bob")
    system.stack.stop("exporter")
    system.stack.stop("importer")
    try:
        accepted = [_export(alice, system.event_id) for _ in range(JOBS)]
        assert [r.status_code for r in accepted] == [202] * JOBS, [r.text for r in accepted]
        for r in (_export(alice, system.event_id), submit(alice, _archive())):
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "too_many_jobs" and r.headers["Retry-After"].isdigit()
        r = submit(bob, _archive())  # the limit is per user
        assert r.status_code == 202, r.text
    finally:
        system.stack.start("exporter")
        system.stack.start("importer")
    for r in accepted:
        alice.wait_task(r.json()["task_url"], timeout=90)
    assert _export(alice, system.event_id).status_code == 202  # finished jobs no longer count


def _stored_keys(system: System, prefix: str) -> set[str]:
    return {i.key for i in LocalBackend(system.storage_dir).iter_objects() if i.key.startswith(prefix)}


def test_stored_bytes_are_limited_per_user(system):
    carol, carol_id = system.client("carol"), system.users["carol"]
    first = os.urandom(200 * 1024)
    r = carol.post("/v1/upload/file", files={"file": ("a.bin", first)})
    assert r.status_code == 200, r.text
    # Declared too large for what is left: refused before a byte is read.
    r = carol.post("/v1/upload/file", files={"file": ("b.bin", os.urandom(200 * 1024))})
    assert r.status_code == 413 and r.json()["error"]["code"] == "quota_exceeded", r.text

    def chunked():  # no Content-Length: cut off while streaming, at the byte that crosses the quota
        yield b'--q\r\nContent-Disposition: form-data; name="files[]"; filename="c.bin"\r\n\r\n'
        yield os.urandom(50 * 1024)
        yield b'\r\n--q\r\nContent-Disposition: form-data; name="files[]"; filename="d.bin"\r\n\r\n'
        for _ in range(10):
            yield os.urandom(10 * 1024)
        yield b"\r\n--q--\r\n"

    r = carol.post("/v1/upload/file", data=chunked(), headers={"Content-Type": "multipart/form-data; boundary=q"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "quota_exceeded", r.text
    # Import archives count too: the upload took 200 KiB of 300, this archive does not fit.
    r = submit(carol, os.urandom(150 * 1024), filename="big.zip")
    assert r.status_code == 413 and r.json()["error"]["code"] == "quota_exceeded", r.text
    # The refused files left nothing behind.
    assert len(_stored_keys(system, f"uploads/{carol_id}/")) == 1
    assert not [k for k in _stored_keys(system, "imports/") if k.endswith("/big.zip")]


def test_import_archives_expire_after_the_import_ends(system):
    dave = system.client("dave")
    ok = submit(dave, _archive(), filename="good.zip")
    bad_files = base_files()
    bad_files["sessions"][0]["id"] = "not an id"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, value in bad_files.items():
            zf.writestr(name, json.dumps(value))
    bad = submit(dave, buffer.getvalue(), filename="bad.zip")
    tasks = [dave.wait_task(r.json()["task_url"], timeout=60) for r in (ok, bad)]
    assert [t["state"] for t in tasks] == ["SUCCESS", "FAILURE"], tasks
    keys = [f"imports/{t['id']}/{name}" for t, name in zip(tasks, ("good.zip", "bad.zip"), strict=True)]

    def gone() -> bool:
        with system.env.db() as session:
            rows = [session.get(StorageObject, key) for key in keys]
            return all(row is not None and row.deleted_at is not None for row in rows)

    _wait(gone, 60, f"import archives {keys} deleted by the sweeper")
    assert not _stored_keys(system, "imports/") & set(keys)


def test_crash_leftovers_are_removed_at_start_up_and_by_the_sweepers(system):
    # The ones planted before the stack started.
    assert not (system.storage_dir / "objects" / "ab" / ".tmp-0123abandoned").exists()
    assert not any((system.env.var_dir / "scratch").iterdir())
    # Left while running: the sweepers find them.
    part = _old_file(system.storage_dir / "objects" / "cd" / ".tmp-4567abandoned")
    scratch = _crashed_scratch(system.env.var_dir)
    _wait(lambda: not part.exists() and not scratch.exists(), 30, "leftovers removed by the sweepers")
    # A real crash: storage killed while an upload streams into it.
    key = f"exports/crash-{uuid.uuid4()}.zip"
    url = signed_url(system.env.env["STORAGE_URL"], system.env.link_key, key, method="PUT", ttl=600)
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    try:
        sock.sendall(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode() + os.urandom(512 * 1024))

        def parts_on_disk() -> list[Path]:
            return list(system.storage_dir.rglob(".tmp-*"))

        _wait(lambda: bool(parts_on_disk()), 20, "the upload's part on disk")
        left = parts_on_disk()
        system.stack.stop("storage", kill=True)
    finally:
        sock.close()
    assert all(p.exists() for p in left)
    system.stack.start("storage")
    _wait(lambda: not any(p.exists() for p in left), 60, f"the crashed upload's parts {left} removed")
    system.stack.wait_healthy(timeout=60)
