"""Storage backends end to end: backend records through the admin API, exports to every backend, downloads through
the links the tasks return, retention (the sweeper) and deleting exports; the five services as processes, real
RabbitMQ, SeaweedFS (S3, real SigV4), fake-gcs-server and the Dropbox/Seafile fakes, all on 127.0.0.1.

The sweeper runs every second here (``STORAGE_SWEEP_INTERVAL=1``). Keep days are whole days, so an expiry is
simulated by moving an object's ``expires_at`` into the past in storage's index table, as time would.

Backend records are checked against their server when they are created or changed (a real put, stat and delete), so
every record here points at a server that runs. CORS is on for one origin (``CORS_ORIGINS``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select, update

from shared import contracts
from shared.models import events as m
from shared.models.base import utcnow
from shared.models.storage import StorageObject
from tests.conftest import free_port
from tests.support.e2e import Client, SystemBase, stack_for
from tests.support.event_tap import EventTap
from tests.support.rabbit import amqp_uri
from tests.support.storage_servers import (
    ServerUnavailable,
    start_dropbox_fake,
    start_fake_gcs,
    start_seafile_fake,
    start_seaweedfs,
)
from tools.stack import Stack

APP_ORIGIN = "https://app.example.org"
BUCKET = "portability-test"
KINDS = ("local", "s3", "gcs", "dropbox", "seafile")


# -- servers ---------------------------------------------------------------------------------------------------------


@dataclass
class Remote:
    """One backend kind ready to be registered: the record body to POST, and the secrets it holds."""

    kind: str
    body: dict[str, Any] | None = None  # None: the server could not run here (skip_reason says why)
    secrets: tuple[str, ...] = ()
    presigns_at: str | None = None  # where download links point when the backend signs them itself
    skip_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _gcs_signing_key() -> dict[str, Any]:
    """A service-account key made here: signs URLs offline (fake-gcs-server does not verify them)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "portability-test", "private_key_id": uuid.uuid4().hex,
            "private_key": pem, "client_email": "signer@portability-test.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "http://127.0.0.1:9/token"}


@pytest.fixture(scope="module")
def remotes(tmp_path_factory) -> Iterator[dict[str, Remote]]:
    workdir = tmp_path_factory.mktemp("servers")
    started: list[Any] = []
    out = {"local": Remote("local", {"config": {}})}

    def attempt(kind: str, start: Callable[[], Remote]) -> None:
        try:
            out[kind] = start()
        except ServerUnavailable as exc:
            out[kind] = Remote(kind, skip_reason=str(exc))

    def s3() -> Remote:
        server = start_seaweedfs(workdir / "seaweedfs", bucket=BUCKET)
        started.append(server)
        return Remote("s3", {"token": server.secret_key, "config": {
            "bucket": BUCKET, "endpoint_url": server.endpoint, "access_key_id": server.access_key,
            "region": "us-east-1", "prefix": "e2e/"}}, secrets=(server.secret_key,), presigns_at=server.endpoint,
            extra={"server": server})

    def gcs() -> Remote:
        from services.storage.backends.gcs import GcsBackend, GcsConfig

        server = start_fake_gcs(workdir / "gcs")
        started.append(server)
        GcsBackend(GcsConfig(bucket=BUCKET, anonymous=True, api_endpoint=server.endpoint)).ensure_bucket()
        signing_key = _gcs_signing_key()
        return Remote("gcs", {"token": json.dumps(signing_key), "config": {
            "bucket": BUCKET, "api_endpoint": server.endpoint, "anonymous": True, "prefix": "e2e/"}},
            secrets=(signing_key["private_key"].splitlines()[1],), presigns_at=server.endpoint)

    def dropbox() -> Remote:
        app_key, app_secret = "app-" + uuid.uuid4().hex[:8], "sec-" + uuid.uuid4().hex
        refresh = "rt-" + uuid.uuid4().hex
        server = start_dropbox_fake(workdir / "dropbox", app_key, app_secret, refresh)
        started.append(server)
        hosts = server.settings["hosts"]
        return Remote("dropbox", {"token": refresh, "config": {
            "app_key": app_key, "app_secret": app_secret, "api_host": hosts["api"], "content_host": hosts["content"],
            "ca_certs": server.settings["ca_cert"], "root": "/e2e"}}, secrets=(app_secret, refresh))

    def seafile() -> Remote:
        token, repo_id = uuid.uuid4().hex, str(uuid.uuid4())
        server = start_seafile_fake(workdir / "seafile", token, repo_id)
        started.append(server)
        return Remote("seafile", {"token": token, "config": {"server_url": server.base_url, "repo_id": repo_id}},
                      secrets=(token,))

    try:
        for kind, start in (("s3", s3), ("gcs", gcs), ("dropbox", dropbox), ("seafile", seafile)):
            attempt(kind, start)
        yield out
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- the system ------------------------------------------------------------------------------------------------------


def _event(tap: EventTap, event_type: str, key: str) -> dict[str, Any]:
    """The first ``event_type`` about object ``key``, loaded as its contract says."""
    return contracts.load_payload(event_type, tap.first(event_type, lambda payload: payload["key"] == key))


@dataclass
class System(SystemBase):
    stack: Stack
    event_id: int
    events: EventTap
    export_events: EventTap

    def index_row(self, key: str) -> StorageObject | None:
        with self.env.db() as session:
            return session.get(StorageObject, key)


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    users = {"admin": True, "organizer": False, "coorganizer": False, "stranger": False}
    with stack_for(tmp_path_factory.mktemp("storage_e2e"), users, STORAGE_SWEEP_INTERVAL="1",
                   CORS_ORIGINS=APP_ORIGIN) as run:
        event_id = run.event("organizer", sessions=20)
        with run.env.db() as session:
            session.add(m.EventRole(user_id=run.users["coorganizer"], event_id=event_id, role=m.ROLE_COORGANIZER))
            session.commit()
        events, export_events = EventTap(amqp_uri(run.vhost), contracts.STORAGE), \
            EventTap(amqp_uri(run.vhost), contracts.EXPORTER)
        yield System(env=run.env, users=run.users, stack=run.start(), event_id=event_id, events=events,
                     export_events=export_events)


def assert_error(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"], error
    return error["message"]


def create_backend(admin: Client, kind: str, body: dict[str, Any], **fields: Any) -> str:
    identifier = f"{kind}-{uuid.uuid4().hex[:8]}"
    r = admin.post("/v1/admin/storage-backends", json={"storage_backend": kind, "storage_backend_id": identifier,
                                                       **body, **fields})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/admin/storage-backends/{identifier}"
    return identifier


def export(client: Client, event_id: int, **body: Any) -> tuple[str, dict[str, Any]]:
    r = client.post(f"/v1/events/{event_id}/export/json", json=body)
    assert r.status_code == 202, r.text
    task_url = r.json()["task_url"]
    task = client.wait_task(task_url, timeout=120)
    assert task["state"] == "SUCCESS", task
    return task_url.rsplit("/", 1)[1], task["result"]


def direct() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def backend_of(request: pytest.FixtureRequest, remotes: dict[str, Remote], kind: str) -> Remote:
    remote = remotes[kind]
    if remote.body is None:
        pytest.skip(remote.skip_reason)
    return remote


# -- the admin API ---------------------------------------------------------------------------------------------------


def test_admin_api_is_for_admins_only(system):
    organizer = system.client("organizer")
    body = {"storage_backend": "local", "storage_backend_id": "nope"}
    assert_error(organizer.get("/v1/admin/storage-backends"), 403, "forbidden")
    assert_error(organizer.post("/v1/admin/storage-backends", json=body), 403, "forbidden")
    assert_error(organizer.request("PATCH", "/v1/admin/storage-backends/x", json={}), 403, "forbidden")
    assert_error(organizer.request("DELETE", "/v1/admin/storage-backends/x"), 403, "forbidden")
    assert_error(requests.get(system.url + "/v1/admin/storage-backends", timeout=10), 401, "unauthorized")


@pytest.mark.parametrize("body, words", [
    ({"storage_backend": "ftp", "storage_backend_id": "a"}, "storage_backend must be one of"),
    ({"storage_backend": "local", "storage_backend_id": "has space"}, "storage_backend_id"),
    ({"storage_backend": "local", "storage_backend_id": "default"}, "reserved"),
    ({"storage_backend": "local", "storage_backend_id": "local"}, "reserved"),
    ({"storage_backend": "local", "storage_backend_id": "a", "color": "red"}, "Unknown field"),
    ({"storage_backend": "local", "storage_backend_id": "a", "token": "t"}, "takes no token"),
    ({"storage_backend": "local", "storage_backend_id": "a", "keep_days": -1}, "keep_days"),
    ({"storage_backend": "local", "storage_backend_id": "a", "keep_days": 1.5}, "keep_days"),
    ({"storage_backend": "s3", "storage_backend_id": "a", "config": {"bucket": "b"}},
     "needs config.access_key_id, token"),
    ({"storage_backend": "s3", "storage_backend_id": "a", "token": "s",
      "config": {"bucket": "b", "access_key_id": "k", "secret_access_key": "s"}}, "either as token or in config"),
    ({"storage_backend": "s3", "storage_backend_id": "a", "token": "s",
      "config": {"bucket": "b", "access_key_id": "k", "endpoint_url": "ftp://x"}}, "config.endpoint_url"),
    ({"storage_backend": "s3", "storage_backend_id": "a", "token": "s",
      "config": {"bucket": "b", "access_key_id": "k", "part_size": 1024}}, "config.part_size"),
    ({"storage_backend": "s3", "storage_backend_id": "a", "token": "s", "config": {"bucket": "b", "x": 1}},
     "Unknown config key"),
    ({"storage_backend": "gcs", "storage_backend_id": "a", "config": {"bucket": "b"}}, "needs token"),
    ({"storage_backend": "gcs", "storage_backend_id": "a", "token": "{}", "config": {"bucket": "b"}},
     "service-account key"),
    ({"storage_backend": "gcs", "storage_backend_id": "a", "config": {"bucket": "b", "anonymous": True,
                                                                      "credentials_file": "/etc/passwd"}},
     "Unknown config key"),
    ({"storage_backend": "dropbox", "storage_backend_id": "a", "token": "r", "config": {"app_key": "k"}},
     "config.app_secret"),
    ({"storage_backend": "dropbox", "storage_backend_id": "a", "token": "r",
      "config": {"app_key": "k", "app_secret": "s", "root": "/"}}, "config.root"),
    ({"storage_backend": "seafile", "storage_backend_id": "a", "config": {"server_url": "https://s", "repo_id": "r"}},
     "needs token"),
    ({"storage_backend": "seafile", "storage_backend_id": "a", "token": "t",
      "config": {"server_url": "https://s", "repo_id": "r", "ca_certs": "/no/such/file.pem"}}, "config.ca_certs"),
])
def test_backend_configs_are_validated_per_kind(system, body, words):
    message = assert_error(system.client("admin").post("/v1/admin/storage-backends", json=body), 400,
                           "invalid_storage_backend")
    assert words in message


def test_admin_api_lifecycle_and_secrets_are_write_only(system, remotes, request):
    admin = system.client("admin")
    # Records are checked against their server when saved: this one is the Dropbox fake's.
    remote = backend_of(request, remotes, "dropbox")
    secrets = (remote.body["token"], remote.body["config"]["app_secret"])
    identifier = create_backend(admin, "dropbox", remote.body, keep_days=3, description="the team's Dropbox")
    assert_error(admin.post("/v1/admin/storage-backends", json={**remote.body, "storage_backend": "dropbox",
                                                                "storage_backend_id": identifier}),
                 409, "storage_backend_exists")

    answers = [admin.get("/v1/admin/storage-backends"), admin.get(f"/v1/admin/storage-backends/{identifier}")]
    record = answers[1].json()
    assert record["storage_backend"] == "dropbox" and record["active"] is True and record["keep_days"] == 3
    assert record["token_set"] is True and record["secrets_set"] == ["app_secret"]
    assert record["config"]["app_key"] == remote.body["config"]["app_key"]
    assert not {"token", "app_secret", "refresh_token"} & (set(record) | set(record["config"]))
    listed = answers[0].json()
    assert identifier in [r["storage_backend_id"] for r in listed["data"]]
    assert listed["default"]["storage_backend"] == "local"

    # PATCH merges config: a secret not sent again is kept; keys can be removed with null.
    patched = admin.request("PATCH", f"/v1/admin/storage-backends/{identifier}",
                            json={"keep_days": 5, "config": {"root": "/elsewhere"}})
    answers.append(patched)
    assert patched.status_code == 200, patched.text
    assert patched.json()["keep_days"] == 5 and patched.json()["config"]["root"] == "/elsewhere"
    assert patched.json()["token_set"] is True and patched.json()["secrets_set"] == ["app_secret"]
    cleared = admin.request("PATCH", f"/v1/admin/storage-backends/{identifier}", json={"token": None})
    assert_error(cleared, 400, "invalid_storage_backend")
    assert "needs token" in cleared.json()["error"]["message"]
    assert_error(admin.request("PATCH", f"/v1/admin/storage-backends/{identifier}",
                               json={"storage_backend": "s3"}), 400, "invalid_storage_backend")
    assert_error(admin.request("PATCH", "/v1/admin/storage-backends/no-such", json={}), 404,
                 "storage_backend_not_found")
    assert_error(admin.get("/v1/admin/storage-backends/no-such"), 404, "storage_backend_not_found")

    deactivated = admin.request("DELETE", f"/v1/admin/storage-backends/{identifier}")
    answers.append(deactivated)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    assert identifier in [r["storage_backend_id"] for r in admin.get("/v1/admin/storage-backends").json()["data"]]

    for answer in answers:
        for secret in secrets:
            assert secret not in answer.text
    for secret in secrets:  # nor in any service's log
        assert secret not in system.log_text()


# -- exports to each backend -----------------------------------------------------------------------------------------


def _check_download(url: str, result: dict[str, Any], event_id: int, data_plane: bool) -> None:
    http = direct()
    whole = http.get(url, timeout=60)
    assert whole.status_code == 200, whole.text[:300]
    assert len(whole.content) == result["size"]
    assert hashlib.sha256(whole.content).hexdigest() == result["sha256"]
    part = http.get(url, headers={"Range": "bytes=100-1123"}, timeout=30)
    assert part.status_code == 206 and part.content == whole.content[100:1124]
    if data_plane:
        assert whole.headers["Content-Disposition"] == f"attachment; filename=event{event_id}.zip"
        assert part.headers["Content-Range"] == f"bytes 100-1123/{result['size']}"


@pytest.mark.parametrize("kind", KINDS)
def test_export_to_each_backend(system, remotes, kind, request):
    remote = backend_of(request, remotes, kind)
    admin, organizer = system.client("admin"), system.client("organizer")
    identifier = create_backend(admin, kind, remote.body)
    task_id, result = export(organizer, system.event_id, storage=identifier)

    row = system.index_row(result["key"])
    assert row is not None and row.backend == identifier and row.sha256 == result["sha256"]
    assert row.expires_at is None  # keep_days 0: kept
    stored = _event(system.events, contracts.OBJECT_STORED, result["key"])
    assert (stored["backend"], stored["backend_kind"], stored["task_id"], stored["event_id"]) == (
        identifier, kind, task_id, system.event_id)
    assert stored["sha256"] == result["sha256"] and stored["expires_at"] is None

    url = result["download_url"]
    if remote.presigns_at:  # S3 and GCS sign their own links: the bytes come straight from the backend
        assert url.startswith(remote.presigns_at + "/"), url
        query = parse_qs(urlsplit(url).query)
        assert query["response-content-disposition"] == [f"attachment; filename=event{system.event_id}.zip"]
    else:
        assert url.startswith(system.env.env["STORAGE_URL"] + "/objects/"), url
    _check_download(url, result, system.event_id, data_plane=remote.presigns_at is None)
    if kind == "s3":  # SeaweedFS applies the signed disposition itself
        assert direct().get(url, timeout=30).headers["Content-Disposition"] == (
            f"attachment; filename=event{system.event_id}.zip")

    # The gateway's link gives a fresh URL of the same kind.
    redirect = organizer.get(f"/v1/events/{system.event_id}/exports/{task_id}", allow_redirects=False)
    assert redirect.status_code == 302, redirect.text
    assert redirect.headers["Location"].startswith(remote.presigns_at or system.env.env["STORAGE_URL"])
    _check_download(redirect.headers["Location"], result, system.event_id, data_plane=remote.presigns_at is None)


def test_export_without_storage_uses_the_default_backend(system):
    task_id, result = export(system.client("organizer"), system.event_id)
    assert system.index_row(result["key"]).backend == "default"
    assert result["download_url"].startswith(system.env.env["STORAGE_URL"] + "/objects/")
    _check_download(result["download_url"], result, system.event_id, data_plane=True)


def test_unknown_and_inactive_backends_are_refused(system):
    admin, organizer = system.client("admin"), system.client("organizer")
    path = f"/v1/events/{system.event_id}/export/json"
    assert "no storage backend" in assert_error(organizer.post(path, json={"storage": "nowhere"}), 400,
                                                "unknown_storage")
    assert_error(organizer.post(path, json={"storage": 7}), 400, "invalid_request")
    assert_error(organizer.post(path, json={"storage": "x", "pdf": True}), 400, "invalid_request")

    identifier = create_backend(admin, "local", {"config": {}})
    task_id, result = export(organizer, system.event_id, storage=identifier, image=False)
    assert admin.request("DELETE", f"/v1/admin/storage-backends/{identifier}").json()["active"] is False
    assert "inactive" in assert_error(organizer.post(path, json={"storage": identifier}), 400, "storage_inactive")
    # What is stored there stays readable.
    redirect = organizer.get(f"/v1/events/{system.event_id}/exports/{task_id}", allow_redirects=False)
    assert redirect.status_code == 302
    assert hashlib.sha256(direct().get(redirect.headers["Location"], timeout=30).content).hexdigest() == \
        result["sha256"]
    # Reactivated, it takes exports again.
    assert admin.request("PATCH", f"/v1/admin/storage-backends/{identifier}", json={"active": True}).json()["active"]
    export(organizer, system.event_id, storage=identifier)


# -- retention -------------------------------------------------------------------------------------------------------


def _expire_now(system: System, key: str) -> None:
    """What the passing of keep days does: the object's expiry is now in the past."""
    with system.env.db() as session:
        row = session.get(StorageObject, key)
        assert row is not None and row.expires_at is not None
        session.execute(update(StorageObject).where(StorageObject.key == key)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()


def _wait_deleted(system: System, key: str, timeout: float = 30) -> StorageObject:
    deadline = time.monotonic() + timeout
    while True:
        row = system.index_row(key)
        if row is not None and row.deleted_at is not None:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} not swept within {timeout} s: {row and row.__dict__}")
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_expired_exports_are_swept_and_answer_410(system, remotes, kind, request):
    remote = backend_of(request, remotes, kind)
    admin, organizer = system.client("admin"), system.client("organizer")
    identifier = create_backend(admin, kind, remote.body, keep_days=1)
    task_id, result = export(organizer, system.event_id, storage=identifier)
    key = result["key"]
    row = system.index_row(key)
    assert row.expires_at is not None
    assert timedelta(hours=23) < row.expires_at - row.created_at <= timedelta(days=1)
    assert _event(system.events, contracts.OBJECT_STORED, key)["expires_at"] is not None
    assert direct().get(result["download_url"], timeout=30).status_code == 200

    _expire_now(system, key)
    row = _wait_deleted(system, key)
    assert row.deleted_reason == "expired"
    expired = _event(system.events, contracts.OBJECT_EXPIRED, key)
    assert (expired["reason"], expired["backend"], expired["backend_kind"], expired["task_id"]) == (
        "expired", identifier, kind, task_id)

    redirect = organizer.get(f"/v1/events/{system.event_id}/exports/{task_id}", allow_redirects=False)
    message = assert_error(redirect, 410, "export_gone")
    assert "expired on" in message and task_id in message
    gone = direct().get(result["download_url"], timeout=30)
    if kind == "local":  # the data plane knows why
        assert "expired on" in assert_error(gone, 410, "gone")
    else:  # the backend's own link: the object is gone from the bucket
        assert gone.status_code in (403, 404), gone.status_code
        server = remote.extra["server"]
        import boto3

        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix="e2e/" + key).get("KeyCount") == 0


def test_objects_without_retention_are_not_swept(system):
    """keep_days 0 and objects whose writer did not ask for retention (imports, media) have no expiry."""
    with system.env.db() as session:
        rows = session.scalars(select(StorageObject).where(StorageObject.backend == "default")).all()
    assert rows and all(r.expires_at is None for r in rows)


# -- deleting an export ----------------------------------------------------------------------------------------------


def test_delete_export_on_request(system):
    organizer = system.client("organizer")
    task_id, result = export(organizer, system.event_id)
    path = f"/v1/events/{system.event_id}/exports/{task_id}"
    assert_error(system.client("coorganizer").request("DELETE", path), 403, "forbidden")
    assert_error(system.client("stranger").request("DELETE", path), 403, "forbidden")
    assert_error(requests.delete(system.url + path, timeout=10), 401, "unauthorized")
    assert_error(organizer.request("DELETE", f"/v1/events/{system.event_id}/exports/nope"), 404, "export_not_found")
    assert organizer.get(path, allow_redirects=False).status_code == 302

    deleted = organizer.request("DELETE", path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert "deleted on request" in assert_error(organizer.get(path, allow_redirects=False), 410, "export_gone")
    assert "deleted on request" in assert_error(direct().get(result["download_url"], timeout=30), 410, "gone")
    assert organizer.request("DELETE", path).status_code == 204  # idempotent
    expired = _event(system.events, contracts.OBJECT_EXPIRED, result["key"])
    assert expired["reason"] == "deleted"

    # Admins may delete any event's exports.
    task_id, _ = export(organizer, system.event_id)
    assert system.client("admin").request("DELETE", f"/v1/events/{system.event_id}/exports/{task_id}"
                                          ).status_code == 204


def test_storage_events_match_their_schemas(system):
    seen = system.events.drain()
    assert seen
    for event_type, payload in seen:
        assert event_type in (contracts.OBJECT_STORED, contracts.OBJECT_EXPIRED)
        assert contracts.SCHEMAS[event_type]().validate(payload) == {}, payload
        assert payload["requested_by"] is None and payload["occurred_at"].endswith("Z")


# -- records are checked against their server (issue 8, item 17) -----------------------------------------------------


def _s3_body(server: Any, **config: Any) -> dict[str, Any]:
    token = config.pop("token", server.secret_key)
    return {"token": token, "config": {"bucket": BUCKET, "endpoint_url": server.endpoint,
                                       "access_key_id": server.access_key, "region": "us-east-1",
                                       "prefix": "e2e/", **config}}


def test_backend_records_are_checked_against_the_server(system, remotes, request):
    remote = backend_of(request, remotes, "s3")
    server = remote.extra["server"]
    admin = system.client("admin")
    wrong_secret = "wrong-" + uuid.uuid4().hex
    cases = [
        ("credentials were refused", _s3_body(server, token=wrong_secret)),
        ("bucket does not exist", _s3_body(server, bucket="no-such-bucket-" + uuid.uuid4().hex[:8])),
        ("cannot be reached", _s3_body(server, endpoint_url=f"http://127.0.0.1:{free_port()}")),
    ]
    for words, body in cases:
        identifier = f"s3-{uuid.uuid4().hex[:8]}"
        r = admin.post("/v1/admin/storage-backends", json={"storage_backend": "s3",
                                                           "storage_backend_id": identifier, **body})
        message = assert_error(r, 400, "storage_backend_check_failed")
        assert words in message and identifier in message and "probe object" in message, message
        assert wrong_secret not in message
        # Nothing was saved.
        assert_error(admin.get(f"/v1/admin/storage-backends/{identifier}"), 404, "storage_backend_not_found")

    # A working record is saved; changing it to a wrong secret is refused and changes nothing.
    identifier = create_backend(admin, "s3", remote.body)
    before = admin.get(f"/v1/admin/storage-backends/{identifier}").json()
    r = admin.request("PATCH", f"/v1/admin/storage-backends/{identifier}", json={"token": wrong_secret})
    assert "credentials were refused" in assert_error(r, 400, "storage_backend_check_failed")
    assert admin.get(f"/v1/admin/storage-backends/{identifier}").json() == before
    export(system.client("organizer"), system.event_id, storage=identifier)  # still the working secret
    # The probe leaves nothing behind in the bucket.
    import boto3

    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                      aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="e2e/_probe/").get("KeyCount") == 0
    assert wrong_secret not in system.log_text()


def test_dropbox_records_with_a_wrong_token_are_refused(system, remotes, request):
    remote = backend_of(request, remotes, "dropbox")
    identifier = f"dropbox-{uuid.uuid4().hex[:8]}"
    r = system.client("admin").post("/v1/admin/storage-backends", json={
        **remote.body, "storage_backend": "dropbox", "storage_backend_id": identifier, "token": "rt-wrong"})
    assert "credentials were refused" in assert_error(r, 400, "storage_backend_check_failed")
    assert_error(system.client("admin").get(f"/v1/admin/storage-backends/{identifier}"), 404,
                 "storage_backend_not_found")


# -- what organizers see of backends and stored exports (issue 8, items 14, 15, 16) ------------------------------------


def test_organizers_list_the_active_backends_without_secrets(system, remotes):
    admin, organizer = system.client("admin"), system.client("organizer")
    active = create_backend(admin, "local", {"config": {}}, description="team archive")
    inactive = create_backend(admin, "local", {"config": {}})
    admin.request("DELETE", f"/v1/admin/storage-backends/{inactive}")
    r = organizer.get("/v1/storage-backends")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0] == {"storage_backend_id": "default", "storage_backend": "local", "default": True,
                       "keep_days": 0, "description": data[0]["description"]}
    ids = [b["storage_backend_id"] for b in data]
    assert active in ids and inactive not in ids and len(ids) == len(set(ids))
    assert [b for b in data if b["storage_backend_id"] == active][0]["description"] == "team archive"
    for entry in data:
        assert set(entry) == {"storage_backend_id", "storage_backend", "description", "keep_days", "default"}
    for secret in (s for remote in remotes.values() for s in remote.secrets):
        assert secret not in r.text
    assert_error(requests.get(system.url + "/v1/storage-backends", timeout=10), 401, "unauthorized")


def test_retention_is_in_the_result_the_history_and_export_completed(system):
    admin, organizer = system.client("admin"), system.client("organizer")
    identifier = create_backend(admin, "local", {"config": {}}, keep_days=2)
    task_id, result = export(organizer, system.event_id, storage=identifier)
    row = system.index_row(result["key"])
    assert result["retention"] == {"backend": identifier, "delete_at": row.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert result["retention"]["delete_at"] != result["expires_at"]  # the archive's lifetime, not the link's
    completed = _event(system.export_events, contracts.EXPORT_COMPLETED, result["key"])
    assert completed["retention"] == result["retention"]
    history = organizer.get(f"/v1/events/{system.event_id}/exports").json()["data"]
    assert [e["retention"] for e in history if e["task_id"] == task_id] == [result["retention"]]

    _, kept = export(organizer, system.event_id)
    assert kept["retention"] == {"backend": "default", "delete_at": None}


def _wait_result(client: Client, task_id: str, field_name: str, timeout: float = 30) -> dict[str, Any]:
    return client.wait_task(f"/v1/tasks/{task_id}", timeout=timeout,
                            until=lambda t: field_name in (t.get("result") or {}))


def test_deleted_and_expired_exports_show_as_such(system):
    admin, organizer = system.client("admin"), system.client("organizer")
    history_path = f"/v1/events/{system.event_id}/exports"

    # Deleted on request: at once, in the task and in the history.
    task_id, result = export(organizer, system.event_id)
    assert organizer.request("DELETE", f"{history_path}/{task_id}").status_code == 204
    task = organizer.get(f"/v1/tasks/{task_id}").json()
    assert task["state"] == "SUCCESS" and "download_url" not in task["result"], task
    assert task["result"]["deleted_at"].endswith("Z") and task["result"]["sha256"] == result["sha256"]
    entry = [e for e in organizer.get(history_path).json()["data"] if e["task_id"] == task_id][0]
    assert entry["deleted_at"] == task["result"]["deleted_at"] and "download" not in entry, entry

    # Expired: storage's sweeper deletes it and announces it; the gateway follows the event.
    identifier = create_backend(admin, "local", {"config": {}}, keep_days=1)
    task_id, result = export(organizer, system.event_id, storage=identifier)
    assert "download" in [e for e in organizer.get(history_path).json()["data"] if e["task_id"] == task_id][0]
    _expire_now(system, result["key"])
    row = _wait_deleted(system, result["key"])
    task = _wait_result(organizer, task_id, "expired_at")
    assert task["state"] == "SUCCESS" and "download_url" not in task["result"], task
    assert task["result"]["expired_at"] == row.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = [e for e in organizer.get(history_path).json()["data"] if e["task_id"] == task_id][0]
    assert entry["expired_at"] == task["result"]["expired_at"] and "download" not in entry, entry


# -- CORS (issue 8, item 13) -------------------------------------------------------------------------------------------


def _cors_headers(r: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def test_cors_for_the_configured_origin_only(system):
    organizer = system.client("organizer")
    token = organizer.http.headers["Authorization"]
    http = direct()
    path = f"/v1/events/{system.event_id}/export/json"
    preflight = http.options(system.url + path, timeout=10, headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204, preflight.text
    cors = _cors_headers(preflight)
    assert cors["access-control-allow-origin"] == APP_ORIGIN and cors["access-control-allow-credentials"] == "true"
    assert "POST" in cors["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= {h.strip().lower()
                                                  for h in cors["access-control-allow-headers"].split(",")}
    refused = http.options(system.url + path, timeout=10, headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and not _cors_headers(refused)

    # The actual requests: the export, its task, the download from the data plane (whole and a range).
    r = http.post(system.url + path, json={}, timeout=10, headers={"Origin": APP_ORIGIN, "Authorization": token})
    assert r.status_code == 202 and _cors_headers(r)["access-control-allow-origin"] == APP_ORIGIN
    assert "Location" in _cors_headers(r)["access-control-expose-headers"]
    task = organizer.wait_task(r.json()["task_url"])
    polled = http.get(system.url + r.json()["task_url"], timeout=10,
                      headers={"Origin": APP_ORIGIN, "Authorization": token})
    assert _cors_headers(polled)["access-control-allow-origin"] == APP_ORIGIN
    assert "Origin" in polled.headers["Vary"]
    url = task["result"]["download_url"]
    assert url.startswith(system.env.env["STORAGE_URL"] + "/objects/")
    download = http.get(url, timeout=30, headers={"Origin": APP_ORIGIN, "Range": "bytes=0-99"})
    assert download.status_code == 206 and len(download.content) == 100
    cors = _cors_headers(download)
    assert cors["access-control-allow-origin"] == APP_ORIGIN
    exposed = {h.strip() for h in cors["access-control-expose-headers"].split(",")}
    assert {"Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges"} <= exposed
    assert "Origin" in download.headers["Vary"]
    preflight = http.options(url, timeout=10, headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET",
                                                        "Access-Control-Request-Headers": "range"})
    assert preflight.status_code == 204 and _cors_headers(preflight)["access-control-allow-origin"] == APP_ORIGIN

    # Other origins get no CORS header at all, with or without credentials; errors carry them for the listed one.
    for target, headers in ((system.url + r.json()["task_url"], {"Authorization": token}), (url, {})):
        other = http.get(target, timeout=10, headers={"Origin": "https://evil.example.org", **headers})
        assert other.status_code in (200, 206) and not _cors_headers(other), other.headers
    unauthorized = http.get(system.url + "/v1/events", timeout=10, headers={"Origin": APP_ORIGIN})
    assert unauthorized.status_code == 401 and _cors_headers(unauthorized)["access-control-allow-origin"] == APP_ORIGIN
