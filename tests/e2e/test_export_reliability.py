"""Exports survive a stopped exporter, a brand-new broker and a ``kill -9`` mid-export; media are fetched with guards.

Media come from a real HTTP server on 127.0.0.1 (allow-listed for these stacks), which also gives the tests a way to
hold an export in the middle: the server can park a request until the test has killed the exporter.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from shared.contracts import EXPORT_REQUEST_QUEUE
from tests.e2e.test_export_e2e import export
from tests.support.e2e import PASSWORD, Client, stack_for
from tests.support.media_host import MediaHost, send_body
from tests.support.rabbit import queue_info

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40


class MediaServer(MediaHost):
    """Serves /photoN.jpg as JPEG, 404 for /photo3.jpg; with ``hold`` set, parks requests until released."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.parked = threading.Event()
        self.requests: list[str] = []
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append(request.path)
        if self.hold.is_set():
            self.parked.set()
            self.release.wait(60)
        if request.path.endswith("photo3.jpg"):
            request.send_error(404)
        else:
            send_body(request, JPEG, "image/jpeg")

    def close(self) -> None:
        self.release.set()
        super().close()


@pytest.fixture(scope="module")
def media():
    server = MediaServer()
    yield server
    server.close()


@contextmanager
def _system(tmp_path, media, services=None):
    with stack_for(tmp_path, {"organizer": False}, MEDIA_ALLOW_HOSTS=f"127.0.0.1:{media.port}",
                   MEDIA_TIMEOUT="5") as run:
        event_id = run.event("organizer", sessions=12, media_base_url=media.base_url)
        yield run.env, run.start(services), event_id


@pytest.fixture
def system(tmp_path, media):
    with _system(tmp_path, media) as system:
        yield system


@contextmanager
def parked_export(media: MediaServer, client: Client, event_id: int) -> Iterator[str]:
    """An export with media whose exporter is parked in its media pass for the block; its task URL."""
    media.parked.clear()
    media.release.clear()
    media.hold.set()
    try:
        task_url = export(client, event_id, {"image": True})
        assert media.parked.wait(30), "the exporter never started fetching media"
        yield task_url
    finally:
        media.hold.clear()
        media.release.set()


def _client(env) -> Client:
    return Client.login(env.env["GATEWAY_URL"], "organizer@example.org", PASSWORD)


def _archive(result: dict) -> zipfile.ZipFile:
    body = requests.get(result["download_url"], timeout=30).content
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    return zipfile.ZipFile(io.BytesIO(body))


def test_media_are_fetched_into_the_archive_and_failures_become_warnings(system, media):
    env, _stack, event_id = system
    client = _client(env)
    task = client.wait_task(export(client, event_id, {"image": True}))
    assert task["state"] == "SUCCESS", task
    archive = _archive(task["result"])
    speakers = {s["id"]: s for s in json.loads(archive.read("speakers"))}
    fetched = [s for s in speakers.values() if s["photo"].startswith("/images/speakers/")]
    assert len(fetched) == len(speakers) - 1
    for speaker in fetched:
        assert archive.read(speaker["photo"].lstrip("/")) == JPEG
        assert speaker["photo"].endswith(f"_{speaker['id']}.jpg")
    broken = [s for s in speakers.values() if s["photo"].endswith("photo3.jpg")]
    assert len(broken) == 1 and broken[0]["photo"].startswith("http://")  # kept its URL
    warnings = task["result"]["warnings"]
    assert [(w["file"], w["record_id"], w["field"]) for w in warnings] == [("speakers", broken[0]["id"], "photo")]
    # Sponsors' logos were requested too ("image" covers them).
    assert any(n.startswith("images/sponsors/") for n in archive.namelist())
    # Flags not set: no audio/video/slides folders.
    assert not any(n.startswith(("audios/", "videos/", "slides/")) for n in archive.namelist())


def test_export_requested_while_exporter_is_stopped_runs_when_it_starts(system):
    env, stack, event_id = system
    stack.stop("exporter")
    client = _client(env)
    task_url = export(client, event_id)
    assert client.get(task_url).json()["state"] == "WAITING"
    stack.start("exporter")
    assert client.wait_task(task_url)["state"] == "SUCCESS"


def test_request_on_a_brand_new_broker_is_kept_until_the_exporter_first_starts(tmp_path, media):
    # A fresh vhost where the exporter has never run: its queue exists only because the gateway declared it.
    with _system(tmp_path, media, services=("storage", "api_gateway")) as (env, stack, event_id):
        stack.wait_healthy(required=("storage",))
        client = _client(env)
        task_url = export(client, event_id)
        deadline = time.monotonic() + 15
        while (queue_info(env.vhost, EXPORT_REQUEST_QUEUE) or {}).get("messages", 0) < 1:
            assert time.monotonic() < deadline, "request never reached the exporter's queue"
            time.sleep(0.2)
        assert client.get(task_url).json()["state"] == "WAITING"
        stack.start("exporter")
        assert client.wait_task(task_url)["state"] == "SUCCESS"


def test_exporter_killed_mid_export_gets_the_request_again(system, media):
    env, stack, event_id = system
    client = _client(env)
    with parked_export(media, client, event_id) as task_url:
        # The export is now in the middle of its media pass: kill the worker without any chance to clean up.
        stack.stop("exporter", kill=True)
        assert client.get(task_url).json()["state"] not in ("SUCCESS", "FAILURE")
    stack.start("exporter")
    task = client.wait_task(task_url)
    assert task["state"] == "SUCCESS", task
    archive = _archive(task["result"])
    assert len(json.loads(archive.read("sessions"))) == 12
    # Terminal means terminal: later polls see the very same result.
    assert client.get(task_url).json() == task


def test_task_contract_is_what_the_open_event_frontend_polls(system, media):
    """The frontend keeps polling while ``state`` is WAITING and takes any other non-SUCCESS state as a failure: a
    task underway is WAITING, its phase is in ``status`` (only forward) with ``progress``."""
    env, _stack, event_id = system
    client = _client(env)
    with parked_export(media, client, event_id) as task_url:
        # The exporter is now parked in its media pass; its started event may still be on its way.
        task = client.wait_task(task_url, timeout=30,
                                until=lambda t: t["state"] != "WAITING" or t.get("status") in ("started", "progress"))
        assert task["state"] == "WAITING", task
        assert task["status"] in ("started", "progress"), task
        if task["status"] == "progress":
            assert set(task["progress"]) == {"stage", "done", "total"}, task
        jobs = client.get(f"/v1/events/{event_id}/exports?limit=200").json()["data"]
        assert [(j["state"], j["status"]) for j in jobs if task_url.endswith(j["task_id"])] == [
            ("WAITING", task["status"])]
    # The frontend's loop, literally: poll while WAITING, then it must be SUCCESS.
    seen = set()
    deadline = time.monotonic() + 60
    while (task := client.get(task_url).json())["state"] == "WAITING":
        seen.add(task["status"])
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
    assert task["state"] == "SUCCESS", task
    assert "progress" not in task and task["result"]["download_url"]
    assert seen <= {"started", "progress"}, seen


class SlowMediaServer(MediaHost):
    """Serves /photoN.jpg as JPEG at once, except the ``slow`` paths, which never answer (until closed); counts the
    requests in flight."""

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[str] = []
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append(request.path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.path in self.slow:
                self.closed.wait(300)  # a host that accepted the connection and then stalls
                return
            send_body(request, JPEG, "image/jpeg")
        finally:
            with self.lock:
                self.in_flight -= 1

    def close(self) -> None:
        self.closed.set()
        super().close()


MEDIA_DEADLINE = 3
MEDIA_CONCURRENCY = 3


def test_slow_media_host_is_bounded_by_the_export_media_deadline(tmp_path):
    """Two photos whose host never answers: the export ends by MEDIA_DEADLINE with them as warnings, and the other
    media, fetched MEDIA_CONCURRENCY at a time, are all in the archive."""
    slow = {"/photo0.jpg", "/photo1.jpg"}
    server = SlowMediaServer(slow)
    # MEDIA_TIMEOUT alone would let each stalled photo hold the export for 60 s per read (6 x 60 s per item).
    with closing(server), stack_for(tmp_path, {"organizer": False}, MEDIA_ALLOW_HOSTS=f"127.0.0.1:{server.port}",
                                    MEDIA_TIMEOUT="60", MEDIA_DEADLINE=str(MEDIA_DEADLINE),
                                    MEDIA_CONCURRENCY=str(MEDIA_CONCURRENCY)) as run:
        event_id = run.event("organizer", sessions=24, media_base_url=f"http://127.0.0.1:{server.port}")
        run.start()
        env = run.env
        client = _client(env)
        started = time.monotonic()
        # The documented bound: the media deadline plus the rest of a small export (seconds, on a loaded machine).
        task = client.wait_task(export(client, event_id, {"image": True}), timeout=MEDIA_DEADLINE + 30)
        assert task["state"] == "SUCCESS", task
        assert time.monotonic() - started < MEDIA_DEADLINE + 30
        archive = _archive(task["result"])
        speakers = json.loads(archive.read("speakers"))
        late = {s["id"] for s in speakers if s["photo"].endswith(tuple(slow))}
        assert len(late) == 2 and all(s["photo"].startswith("http://") for s in speakers if s["id"] in late)
        warnings = task["result"]["warnings"]
        assert sorted((w["file"], w["record_id"], w["code"]) for w in warnings) == \
            sorted(("speakers", i, "media_deadline") for i in late)
        for speaker in speakers:
            if speaker["id"] not in late:
                assert archive.read(speaker["photo"].lstrip("/")) == JPEG
        sponsors = json.loads(archive.read("sponsors"))
        assert all(archive.read(s["logo"].lstrip("/")) == JPEG for s in sponsors)
        # Concurrent, within the bound: the stalled photos held two slots while the rest went through the third.
        assert 2 <= server.max_in_flight <= MEDIA_CONCURRENCY
        assert len(server.requests) == len(speakers) + len(sponsors)
