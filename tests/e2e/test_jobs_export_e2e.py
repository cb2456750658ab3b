"""Exports across a storage restart (issue 9, item 5), over HTTP against the real services and RabbitMQ.

Storage killed (``kill -9``) in the middle of an export's upload and started again: the export is retried within
``STORAGE_RETRY_SECONDS`` and ends SUCCESS once, with a complete archive whose sha256 is right. Storage down for
longer than the window: FAILURE ``storage_unavailable``, once, after the window.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from contextlib import closing
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from shared.contracts import EXPORTER
from tests.e2e.test_export_e2e import export
from tests.support.e2e import stack_for
from tests.support.event_tap import EventTap
from tests.support.media_host import MediaHost, send_body

RETRY_WINDOW = 25  # STORAGE_RETRY_SECONDS of this stack
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 1200  # ~300 KB: each photo fills an upload chunk


class ParkingMediaServer(MediaHost):
    """Serves JPEG photos; with ``park_at`` set, the n-th request waits until ``release`` (once)."""

    def __init__(self) -> None:
        self.park_at: int | None = None
        self.parked = threading.Event()
        self.release = threading.Event()
        self.count = 0
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.count += 1
        if self.park_at is not None and self.count == self.park_at:
            self.parked.set()
            self.release.wait(120)
        send_body(request, PHOTO, "image/jpeg")

    def close(self) -> None:
        self.release.set()
        super().close()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with closing(ParkingMediaServer()) as media, stack_for(
            tmp_path_factory.mktemp("jobs_export"), {"organizer": False}, MEDIA_ALLOW_HOSTS=f"127.0.0.1:{media.port}",
            STORAGE_RETRY_SECONDS=str(RETRY_WINDOW)) as run:
        event_id = run.event("organizer", sessions=12, media_base_url=f"http://127.0.0.1:{media.port}")
        stack = run.start()
        yield stack, run.client("organizer"), EventTap(run.env.env["AMQP_URI"], EXPORTER), media, event_id


def task_id_of(task_url: str) -> str:
    return task_url.rstrip("/").rsplit("/", 1)[1]


def test_storage_killed_during_the_upload_and_restarted_the_export_succeeds_once(system):
    stack, client, tap, media, event_id = system
    media.count, media.park_at = 0, 2
    task_url = export(client, event_id, {"image": True})
    # The first photo is streaming to storage; the second one is being fetched: the upload is open.
    assert media.parked.wait(60), "the exporter never fetched a second photo"
    stack.stop("storage", kill=True)
    stack.start("storage")
    stack.wait_healthy(timeout=60)
    media.release.set()  # the upload goes on into a dead connection
    task = client.wait_task(task_url, timeout=120)
    assert task["state"] == "SUCCESS", task
    body = requests.get(task["result"]["download_url"], timeout=60).content
    assert hashlib.sha256(body).hexdigest() == task["result"]["sha256"]
    assert len(body) == task["result"]["size"]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        photos = [n for n in archive.namelist() if n.startswith("images/speakers/")]
        assert photos and all(archive.read(n) == PHOTO for n in photos)
        assert "meta" in archive.namelist()
    task_id = task_id_of(task_url)
    assert len(tap.of(task_id, "export_completed")) == 1
    assert tap.of(task_id, "export_failed") == []


def test_storage_down_longer_than_the_window_fails_once_after_it(system):
    stack, client, tap, _media, event_id = system
    stack.stop("storage", kill=True)
    try:
        started = time.monotonic()
        task_url = export(client, event_id)
        task = client.wait_task(task_url, timeout=RETRY_WINDOW + 60)
        elapsed = time.monotonic() - started
        assert task["state"] == "FAILURE", task
        assert task["result"]["code"] == "storage_unavailable", task
        assert elapsed >= RETRY_WINDOW, f"failed after {elapsed:.1f} s, before the {RETRY_WINDOW} s window"
        task_id = task_id_of(task_url)
        assert len(tap.of(task_id, "export_failed")) == 1
        assert tap.of(task_id, "export_completed") == []
    finally:
        stack.start("storage")
        stack.wait_healthy(timeout=60)
