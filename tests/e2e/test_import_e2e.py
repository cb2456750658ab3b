"""Import end to end: the real five services over real RabbitMQ, driven through the gateway's HTTP API.

One stack for the module. Every sample folder (zipped on the fly) and zip under ``../shared/samples/open_event`` is
submitted at once and polled together; the tests then check each outcome, the media, the round trips and the
failure modes.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from shared.archive import ARRAY_FILES, media_fields
from shared.contracts import GATEWAY, IMPORT_REQUEST_QUEUE, IMPORT_REQUESTED
from shared.event_stats import record_counts
from shared.models import events as m
from shared.models.gateway import Task
from shared.models.importer import ImportedEvent
from shared.object_keys import import_media_key as media_key
from shared.passwords import hash_password
from tests.conftest import SAMPLES_DIR
from tests.integration.test_archive_loader import expected_text
from tests.support.e2e import PASSWORD, Client, Running, stack_for
from tests.support.hostile_archives import hostile_cases
from tests.support.import_helpers import (
    EXPORTED,
    IMPORT_PATH,
    archive_bytes,
    expected_counts,
    export_archive,
    file_text,
    import_all,
    parsed_members,
    position_id_map,
    row_counts,
    staged_import,
    submit,
    submit_ok,
    unmap,
    wait_all,
    wait_queue_drained,
    zip_members,
)
from tests.support.legacy_source import read_legacy_source
from tools.synthetic import create_synthetic_event

MAX_BYTES = 16 * 1024 * 1024  # the stack's IMPORT_MAX_BYTES: above every sample, small enough to test the limit
SAMPLE_ROOT = SAMPLES_DIR / "open_event"
FAILING = ("legacy/FOSSASIA11", "legacy/FOSSASIA15")  # files that are not valid JSON
ROUND_TRIP = ["legacy/FOSSASIA16", "legacy/OTS16", "legacy/EhealthAfrica", "legacy/FOSSASIA10", "legacy/FOSSASIA14"]
# Bookkeeping of other services, written when they hear about a (failed) import: not event data.
# Bookkeeping of other services: tasks, mails, storage's object index (the uploaded archive), job leases.
NOT_EVENT_DATA = ("tasks", "mail_deliveries", "storage_objects", "storage_backends", "job_leases")


def _samples() -> list[str]:
    if not SAMPLE_ROOT.is_dir():
        return []
    return sorted(p.relative_to(SAMPLE_ROOT).as_posix() for group in ("legacy", "early_2016", "dasherized")
                  for p in (SAMPLE_ROOT / group).iterdir() if p.is_dir() or p.suffix == ".zip")


SAMPLES = _samples()


System = Running  # the env, the users, the stack and logged-in clients are all these tests need


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    # No MEDIA_ALLOW_HOSTS: exports read re-hosted media from storage by key, not through the loopback gateway.
    with stack_for(tmp_path_factory.mktemp("import_e2e"), {"alice": False, "bob": False, "admin": True},
                   IMPORT_MAX_BYTES=str(MAX_BYTES)) as run:
        run.start()
        yield run


@pytest.fixture(scope="module")
def sample_imports(system):
    """Every sample submitted at once by alice, then polled together: name -> terminal task."""
    if not SAMPLES:
        pytest.skip(f"samples not found at {SAMPLE_ROOT} (set SAMPLES_DIR to run these tests)")
    return import_all(system.client("alice"), SAMPLE_ROOT, SAMPLES)


def invalid_json_files(folder: Path) -> set[str]:
    bad = set()
    for path in folder.iterdir():
        if path.is_file():
            try:
                json.loads(path.read_bytes())
            except ValueError:
                bad.add(path.name)
    return bad


def assert_error(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"], error
    return error["message"]


# --- every sample --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SAMPLES)
def test_sample_imports_with_exactly_its_records(name, system, sample_imports):
    task = sample_imports[name]
    result = task["result"]
    if name in FAILING:
        assert task["state"] == "FAILURE", task
        assert result["code"] == "invalid_json"
        assert result["file"] in invalid_json_files(SAMPLE_ROOT / name) and result["file"] in result["message"], result
        assert set(result) == {"code", "message", "file", "record_id", "field", "errors", "errors_total"}
        assert result["errors"][0] == {k: result[k] for k in ("code", "message", "file", "record_id", "field")}
        return
    assert task["state"] == "SUCCESS", task
    assert set(result) == {"id", "event_name", "url", "counts", "warnings", "warnings_total"}
    assert result["url"] == f"{system.url}/v1/events/{result['id']}"
    expected = expected_counts(SAMPLE_ROOT / name)
    detail = system.client("alice").get(f"/v1/events/{result['id']}")
    assert detail.status_code == 200, detail.text  # the importer is the event's organizer
    assert detail.json()["name"] == result["event_name"]
    assert detail.json()["counts"] == expected
    with system.env.db() as session:
        assert record_counts(session, result["id"]) == expected
        roles = session.execute(sa.select(m.EventRole.user_id, m.EventRole.role)
                                .where(m.EventRole.event_id == result["id"])).all()
        assert roles == [(system.users["alice"], m.ROLE_ORGANIZER)]
        imported = session.get(ImportedEvent, task["id"])
        assert imported.event_id == result["id"] and imported.variant == name.split("/")[0]
    assert {k: result["counts"][k] for k in expected} == expected
    assert result["warnings_total"] >= len(result["warnings"])


def test_import_jobs_lists_only_the_callers_imports(system, sample_imports):
    alice = system.client("alice")
    jobs = alice.get("/v1/import-jobs?limit=200").json()["data"]
    by_task = {job["task_id"]: job for job in jobs}
    for name, task in sample_imports.items():
        job = by_task[task["id"]]
        assert job["state"] == task["state"] and job["result"] == task["result"]
        assert job["filename"] == Path(name).stem + ".zip"
        assert job["created_at"].endswith("Z")
        assert job["event_id"] == (task["result"]["id"] if task["state"] == "SUCCESS" else None)
    bob = system.client("bob")
    assert not set(by_task) & {job["task_id"] for job in bob.get("/v1/import-jobs").json()["data"]}
    assert_error(requests.get(system.url + "/v1/import-jobs"), 401, "unauthorized")
    # Tasks of an import follow the same rules as exports: the requester and admins only.
    some = next(iter(sample_imports.values()))
    assert bob.get(f"/v1/tasks/{some['id']}").status_code == 403
    assert system.client("admin").get(f"/v1/tasks/{some['id']}").status_code == 200


# --- media ---------------------------------------------------------------------------------------------------------

def _media_values(records: list, file: str) -> list[tuple[object, str, object]]:
    return [(r.get("id"), f.field, r.get(f.field)) for r in records for f in media_fields(file)]


def test_archive_media_are_rehosted_missing_and_fake_ones_dropped(system, sample_imports):
    name = "legacy/OTS16"
    if name not in sample_imports:
        pytest.skip("OTS16 sample absent")
    task = sample_imports[name]
    result = task["result"]
    warnings = {(w["file"], w["record_id"], w["field"]): w for w in result["warnings"]}
    folder = SAMPLE_ROOT / name
    source = read_legacy_source(folder)
    members = parsed_members(export_archive(system.client("alice"), result["id"]))
    # The XML error page saved as session_44.mp3 is not published.
    fake = next(s for s in source["sessions"] if (s.get("audio") or "").endswith("session_44.mp3"))
    assert warnings[("sessions", fake["id"], "audio")]["code"] == "media_invalid"
    rehosted = 0
    pattern = re.compile(rf"^{re.escape(system.url)}/media/imports/{task['id']}/media/\S+$")
    for file in ("speakers", "sponsors", "sessions"):
        produced = members[file]
        for (src_id, field, value), (_, _, new_value) in zip(_media_values(source[file], file),
                                                             _media_values(produced, file), strict=True):
            if not isinstance(value, str) or not value or value.startswith(("http://", "https://")):
                assert new_value == value  # absolute URLs stay as they are, never fetched
            elif (file, src_id, field) in warnings:
                assert new_value is None
                code = warnings[(file, src_id, field)]["code"]
                assert code == ("media_missing" if not (folder / value.lstrip("/")).is_file() else "media_invalid")
            else:
                assert pattern.match(new_value), new_value
                local = folder / value.lstrip("/")
                body = requests.get(new_value, timeout=30)  # public: redirected to a signed storage link
                assert body.status_code == 200 and body.content == local.read_bytes()
                rehosted += 1
    assert rehosted > 0
    missing = {w["url"] for w in result["warnings"] if w["code"] == "media_missing"}
    photos = {u for u in missing if u.startswith("/images/speakers/")}
    assert len(photos) == 11  # PROVENANCE.md: OTS16 references 11 images that are not there (and many audios)
    # Only re-hosted media are served by /media/, and only by key.
    assert_error(requests.get(system.url + "/media/exports/event1/x/event1.zip", allow_redirects=False), 404,
                 "not_found")


def test_rehosted_media_come_back_in_an_export_with_media(system, sample_imports):
    name = "legacy/FOSSASIA10"
    if name not in sample_imports:
        pytest.skip("FOSSASIA10 sample absent")
    folder = SAMPLE_ROOT / name
    alice = system.client("alice")
    r = alice.post(f"/v1/events/{sample_imports[name]['result']['id']}/export/json", json={"image": True})
    task = alice.wait_task(r.json()["task_url"], timeout=60)
    assert task["state"] == "SUCCESS" and task["result"]["warnings_total"] == 0, task
    archive = zipfile.ZipFile(io.BytesIO(requests.get(task["result"]["download_url"], timeout=30).content))
    source = json.loads((folder / "speakers").read_bytes())
    exported = json.loads(archive.read("speakers"))
    for old, new in zip(source, exported, strict=True):
        assert new["photo"].startswith("/images/speakers/")  # fetched back into the archive...
        assert archive.read(new["photo"].lstrip("/")) == (folder / old["photo"].lstrip("/")).read_bytes()  # intact
    event = json.loads(archive.read("event"))
    assert archive.read(event["logo"].lstrip("/")) == (folder / "images" / "fossasia-dark.png").read_bytes()


# --- round trips ---------------------------------------------------------------------------------------------------

def _rehosted_expected(source: dict, produced: dict, warnings: set, gateway: str, task_id: str) -> dict:
    """The source with archive media paths replaced the way the import must have: URL if re-hosted, else None."""
    out = dict(source)
    for file in ("event",) + ARRAY_FILES:
        if file not in source or not media_fields(file):
            continue
        records = [source[file]] if file == "event" else source[file]
        new_records = [produced[file]] if file == "event" else produced[file]
        fixed = []
        for record, new in zip(records, new_records, strict=True):
            record = dict(record)
            for media in media_fields(file):
                value = record.get(media.field)
                if isinstance(value, str) and value and not value.startswith(("http://", "https://")):
                    if (file, record.get("id"), media.field) in warnings:
                        record[media.field] = None
                    else:
                        url = new[media.field]
                        assert url == f"{gateway}/media/{media_key(task_id, value.lstrip('/'))}", (value, url)
                        record[media.field] = url
            fixed.append(record)
        out[file] = fixed[0] if file == "event" else fixed
    return out


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_import_then_export_gives_back_the_source(name, system, sample_imports):
    if name not in sample_imports:
        pytest.skip(f"{name} sample absent")
    result = sample_imports[name]["result"]
    source = read_legacy_source(SAMPLE_ROOT / name)
    produced = parsed_members(export_archive(system.client("alice"), result["id"]))
    source_event = dict(source["event"])
    source_event.pop("creator", None)
    id_map = position_id_map({**source, "event": source_event}, produced)
    warnings = {(w["file"], w["record_id"], w["field"]) for w in result["warnings"]}
    assert len(result["warnings"]) == result["warnings_total"]  # all listed: the comparison below needs them
    expected = _rehosted_expected(source, produced, warnings, system.url, sample_imports[name]["id"])
    for file in EXPORTED:
        if file == "event":
            back = unmap("event", produced["event"], id_map)
        else:
            back = [unmap(file, r, id_map) for r in produced[file]]
        assert file_text(file, back) == expected_text(expected, file), file


def _fixed_point(system: System, client: Client, event_id: int) -> None:
    first = export_archive(client, event_id)
    task = client.wait_task(submit_ok(client, zip_members(first), "again.zip"), timeout=120)
    assert task["state"] == "SUCCESS", task
    # Media are absolute URLs now: nothing is left to re-host or drop.
    assert not [w for w in task["result"]["warnings"] if w["code"].startswith("media_")], task["result"]
    second = export_archive(client, task["result"]["id"])
    assert list(first) == list(second)
    old, new = parsed_members(first), parsed_members(second)
    id_map = position_id_map(old, new)
    for file in EXPORTED:
        back = unmap(file, new[file], id_map) if file == "event" else [unmap(file, r, id_map) for r in new[file]]
        assert file_text(file, back).encode() == first[file], file


def test_export_import_export_is_a_fixed_point(system, sample_imports):
    """For every event in the database: a synthetic one and every imported sample."""
    alice = system.client("alice")
    with system.env.db() as session:
        synthetic = create_synthetic_event(session, sessions=40, owner_user_id=system.users["alice"])
        session.commit()
    events = [synthetic] + [t["result"]["id"] for t in sample_imports.values() if t["state"] == "SUCCESS"]
    errors: list[BaseException] = []

    def run(event_id: int) -> None:
        try:
            _fixed_point(system, alice, event_id)
        except BaseException as exc:  # reported below, with the event
            errors.append(AssertionError(f"event {event_id}: {exc!r}"))

    threads = [threading.Thread(target=run, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors


# --- hostile archives ---------------------------------------------------------------------------------------------

def _stream_upload(client: Client, path: Path) -> requests.Response:
    """A chunked multipart upload read from disk (for archives too large to build a body in memory)."""
    boundary = "hostile-boundary-1"

    def body() -> Iterator[bytes]:
        part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: application/zip\r\n\r\n")
        yield part.encode()
        with path.open("rb") as f:
            yield from iter(lambda: f.read(1024 * 1024), b"")
        yield f"\r\n--{boundary}--\r\n".encode()

    return client.post(IMPORT_PATH, data=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_hostile_archives_fail_with_their_code_and_change_nothing(system, tmp_path):
    cases = hostile_cases(tmp_path)
    assert len(cases) >= 50
    # Cases that need other reader limits than the service's defaults are the reader's own tests; folders are not
    # uploads. Everything else goes through HTTP.
    runnable = [c for c in cases if c.limits is None and c.path.is_file()]
    assert len(runnable) >= 50
    alice = system.client("alice")
    before = row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)
    urls: dict[str, str] = {}
    for case in runnable:
        if case.path.stat().st_size > MAX_BYTES:  # the upload limit is the archive size limit
            assert_error(_stream_upload(alice, case.path), 413, "too_large")
            continue
        if case.path.stat().st_size == 0:  # refused by the gateway before it reaches storage
            assert_error(submit(alice, b"", case.path.name), 400, "empty_file")
            continue
        urls[case.name] = submit_ok(alice, case.path.read_bytes(), case.path.name)
    tasks = wait_all(alice, list(urls.values()), timeout=120)
    wrong = {}
    for case in runnable:
        if case.name not in urls:
            continue
        task = tasks[urls[case.name]]
        result = task["result"] or {}
        if (task["state"], result.get("code"), result.get("file")) != ("FAILURE", case.expected_code,
                                                                       case.expected_file):
            wrong[case.name] = (task["state"], result)
        elif case.expected_file is not None:
            assert case.expected_file in result["message"], result
    assert not wrong, wrong
    assert row_counts(system.env.database_url, exclude=NOT_EVENT_DATA) == before
    # No scratch files left behind by any of them.
    assert not any((system.env.var_dir / "scratch").iterdir())


def test_failure_inside_the_transaction_rolls_everything_back(system):
    """A failure after rows were written (the requester deleted meanwhile: the organizer role cannot be added)."""
    folder = SAMPLE_ROOT / "legacy" / "FOSSASIA16"
    if not folder.is_dir():
        pytest.skip("FOSSASIA16 sample absent")
    with system.env.db() as session:
        ghost = m.User(email="ghost@example.org", password_hash=hash_password(PASSWORD))
        session.add(ghost)
        session.commit()
        ghost_id = ghost.id
    client = Client.login(system.url, "ghost@example.org", PASSWORD)
    system.stack.stop("importer")
    try:
        task_url = submit_ok(client, archive_bytes(folder), "f16.zip")
        with system.env.db() as session:
            session.execute(sa.delete(m.User).where(m.User.id == ghost_id))
            session.commit()
        before = row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)
    finally:
        system.stack.start("importer")
    task_id = task_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 60
    while True:
        with system.env.db() as session:
            task = session.get(Task, task_id)
            if task.state in ("SUCCESS", "FAILURE"):
                break
        assert time.monotonic() < deadline, task.state
        time.sleep(0.2)
    assert task.state == "FAILURE" and task.result["code"] == "internal_error", task.result
    assert row_counts(system.env.database_url, exclude=NOT_EVENT_DATA) == before
    # The media it had re-hosted before the transaction were deleted again.
    from services.storage.backends.local import LocalBackend

    keys = [info.key for info in LocalBackend(system.env.var_dir / "storage").iter_objects()]
    assert not [k for k in keys if k.startswith(f"imports/{task_id}/media/")]
    assert f"imports/{task_id}/f16.zip" in keys  # the upload itself is kept


# --- idempotency and concurrency -----------------------------------------------------------------------------------

def test_same_request_delivered_twice_creates_one_event(system):
    from nameko.standalone.events import event_dispatcher

    folder = SAMPLE_ROOT / "legacy" / "FOSSASIA10"
    if not folder.is_dir():
        pytest.skip("FOSSASIA10 sample absent")
    payload = staged_import(system.env, folder, {"id": system.users["bob"], "email": "bob@example.org"})
    task_id = payload["task_id"]
    before = row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)
    dispatch = event_dispatcher({"AMQP_URI": system.env.env["AMQP_URI"], "serializer": "json"})
    dispatch(GATEWAY, IMPORT_REQUESTED, payload)
    dispatch(GATEWAY, IMPORT_REQUESTED, payload)  # a duplicate delivery, racing the first
    bob = system.client("bob")
    task = bob.wait_task(f"/v1/tasks/{task_id}", timeout=60)
    assert task["state"] == "SUCCESS", task
    wait_queue_drained(system.env.vhost, IMPORT_REQUEST_QUEUE)
    dispatch(GATEWAY, IMPORT_REQUESTED, payload)  # redelivered long after the commit
    wait_queue_drained(system.env.vhost, IMPORT_REQUEST_QUEUE)
    after = row_counts(system.env.database_url, exclude=NOT_EVENT_DATA)
    assert after["events"] == before["events"] + 1
    assert after["imported_events"] == before["imported_events"] + 1
    assert after["sessions"] == before["sessions"] + 8
    assert bob.get(f"/v1/tasks/{task_id}").json() == task  # terminal: never changes


def test_two_imports_at_once_both_succeed_with_separate_events(system):
    folder = SAMPLE_ROOT / "legacy" / "FOSSASIA16"
    if not folder.is_dir():
        pytest.skip("FOSSASIA16 sample absent")
    data = archive_bytes(folder)
    alice, bob = system.client("alice"), system.client("bob")
    urls: dict[str, str] = {}
    threads = [threading.Thread(target=lambda who=who, c=c: urls.__setitem__(who, submit_ok(c, data, "f16.zip")))
               for who, c in (("alice", alice), ("bob", bob))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tasks = {who: (alice if who == "alice" else bob).wait_task(url, timeout=60) for who, url in urls.items()}
    assert all(t["state"] == "SUCCESS" for t in tasks.values()), tasks
    ids = {t["result"]["id"] for t in tasks.values()}
    assert len(ids) == 2
    for task in tasks.values():
        assert task["result"]["counts"]["sessions"] == 493 and task["result"]["counts"]["speakers"] == 187
    # Each requester organizes their own copy only.
    assert alice.get(f"/v1/events/{tasks['bob']['result']['id']}").status_code == 403


# --- upload validation ---------------------------------------------------------------------------------------------

def test_import_needs_a_logged_in_user(system):
    r = requests.post(system.url + IMPORT_PATH, files={"file": ("a.zip", b"PK\x05\x06" + bytes(18))})
    assert_error(r, 401, "unauthorized")


def test_upload_validation(system):
    alice = system.client("alice")
    before = row_counts(system.env.database_url)
    message = assert_error(submit(alice, b"not a zip", "event.json"), 400, "invalid_file_type")
    assert "event.json" in message and ".zip" in message
    assert_error(alice.post(IMPORT_PATH, files={"archive": ("a.zip", b"PK")}), 400, "missing_file")
    assert_error(alice.post(IMPORT_PATH, files={"file": (None, "a.zip")}), 400, "missing_file")  # a field, no file
    assert_error(submit(alice, b"", "empty.zip"), 400, "empty_file")
    assert_error(alice.post(IMPORT_PATH, data=b"PK", headers={"Content-Type": "application/zip"}), 400,
                 "not_multipart")
    assert_error(alice.post(IMPORT_PATH, json={"file": "x"}), 400, "not_multipart")
    assert_error(alice.post(IMPORT_PATH, data=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}),
                 400, "empty_body")
    assert_error(alice.post(IMPORT_PATH, data=b"garbage without boundaries",
                            headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400, "malformed_multipart")
    # Nothing reached the database (no task rows either: rejected uploads are not jobs).
    assert row_counts(system.env.database_url) == before


def test_oversized_upload_is_refused_while_streaming(system):
    alice = system.client("alice")
    before = row_counts(system.env.database_url)
    big = b"PK" + bytes(MAX_BYTES)  # one byte over... and then some
    # With a Content-Length the gateway refuses before reading the body.
    assert_error(submit(alice, big, "big.zip"), 413, "too_large")

    def chunked():  # no Content-Length: the limit is enforced while streaming
        boundary = b"b0und4ry"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        yield b"Content-Type: application/zip\r\n\r\n"
        for _ in range(MAX_BYTES // (1024 * 1024) + 2):
            yield bytes(1024 * 1024)
        yield b"\r\n--" + boundary + b"--\r\n"

    r = alice.post(IMPORT_PATH, data=chunked(), headers={"Content-Type": "multipart/form-data; boundary=b0und4ry"})
    assert_error(r, 413, "too_large")
    assert row_counts(system.env.database_url) == before
