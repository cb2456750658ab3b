"""Imports under attack and faults (issue 9, items 3 and 4), over HTTP against the real services and RabbitMQ.

- A session listing 100,000 speakers ends FAILURE ``too_many_relations`` naming file, record and field, once, with
  the database unchanged and one mail; below the limit such a session imports in linear time.
- A redelivery while the first run is alive (its broker connection cut) does not run the import a second time.
- A request whose worker keeps dying ends FAILURE ``too_many_deliveries`` after ``JOB_MAX_DELIVERIES`` and is
  dead-lettered to ``importer.dead_letter``.
- A huge JSON string is refused while it streams (a configurable limit), at the default limit too (200 MB).
"""

from __future__ import annotations

import copy
import json
import os
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.contracts import IMPORT_REQUEST_QUEUE, IMPORTER
from shared.jobs.dead_letter import dead_letter_queue
from shared.models import mailer as m
from tests.support.e2e import Client, Env, stack_for
from tests.support.event_tap import EventTap, close_connection, consumer_connection
from tests.support.hostile_archives import base_files
from tests.support.import_helpers import row_counts, wait_queue_drained
from tests.support.rabbit import queue_info
from tools.stack import Stack

# Bookkeeping of services, not event data: what a failed import may change.
NOT_EVENT_DATA = ("tasks", "mail_deliveries", "storage_objects", "storage_backends", "job_leases")


@dataclass
class System:
    env: Env
    stack: Stack
    tap: EventTap
    client: Client  # alice's

    @property
    def vhost(self) -> str:
        return self.env.vhost

    def event_rows(self) -> dict[str, int]:
        return row_counts(self.env.database_url, exclude=NOT_EVENT_DATA)

    def mails(self, task_id: str) -> list[str]:
        with self.env.db() as session:
            return list(session.scalars(sa.select(m.MailDelivery.kind).where(m.MailDelivery.task_id == task_id)))

    def wait_mail(self, task_id: str, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while not (kinds := self.mails(task_id)):
            assert time.monotonic() < deadline, f"no mail recorded for {task_id}"
            time.sleep(0.2)
        return kinds

    def settle(self, task_id: str) -> None:
        """Until no delivery of the request is left anywhere (a duplicate run would still be holding one)."""
        wait_queue_drained(self.vhost, IMPORT_REQUEST_QUEUE, timeout=120)


@contextmanager
def system_for(tmp: Path, database_url: str | None = None, **env: str) -> Iterator[System]:
    with stack_for(tmp, {"alice": False}, database_url, **env) as run:
        stack = run.start()
        yield System(env=run.env, stack=stack, tap=EventTap(run.env.env["AMQP_URI"], IMPORTER),
                     client=run.client("alice"))


@pytest.fixture(scope="module")
def default_system(tmp_path_factory):
    with system_for(tmp_path_factory.mktemp("jobs_default")) as system:
        yield system


@pytest.fixture(scope="module")
def tuned_system(tmp_path_factory):
    # Limits and lease lifetimes a test can reach quickly; each is documented in the README's configuration table.
    with system_for(tmp_path_factory.mktemp("jobs_tuned"), IMPORT_MAX_SESSION_SPEAKERS="50000",
                    IMPORT_MAX_STRING_CHARS="100000", JOB_LEASE_SECONDS="6", JOB_MAX_DELIVERIES="2") as system:
        yield system


def task_id_of(task_url: str) -> str:
    return task_url.rstrip("/").rsplit("/", 1)[1]


def write_archive(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in files.items():
            zf.writestr(name, json.dumps(value, separators=(",", ":")))
    return path


def fan_out_files(speakers: int) -> dict:
    """The base event, its first session listing ``speakers`` speakers (each of whom lists it back)."""
    files = base_files()
    session = files["sessions"][0]
    session["speakers"] = [{"id": i, "name": f"Speaker {i}", "organisation": "Org"} for i in range(1, speakers + 1)]
    files["speakers"] = [{"id": i, "name": f"Speaker {i}", "organisation": "Org", "photo": None,
                          "sessions": [{"id": 1, "title": session["title"]}]} for i in range(1, speakers + 1)]
    files["sessions"][1]["speakers"] = [{"id": 2, "name": "Speaker 2", "organisation": "Org"}]
    files["speakers"][1]["sessions"].append({"id": 2, "title": "Talk two"})
    return files


def big_files(sessions: int) -> dict:
    """A plain event with many sessions (one speaker each): an import that takes a few seconds."""
    files = base_files()
    template = files["sessions"][0]
    files["sessions"] = []
    files["speakers"] = []
    for i in range(1, sessions + 1):
        session = copy.deepcopy(template)
        session.update(id=i, title=f"Talk {i}", long_abstract="A talk about things. " * 20,
                       speakers=[{"id": i, "name": f"Speaker {i}", "organisation": "Org"}])
        files["sessions"].append(session)
        files["speakers"].append({"id": i, "name": f"Speaker {i}", "organisation": "Org", "photo": None,
                                  "short_biography": "Works on things. " * 10,
                                  "sessions": [{"id": i, "title": f"Talk {i}"}]})
    files["tracks"][0]["sessions"] = [{"id": i, "title": f"Talk {i}"} for i in range(1, sessions + 1)]
    return files


def submit_file(client: Client, path: Path) -> str:
    with path.open("rb") as fh:
        r = client.post("/v1/events/import/json", files={"file": (path.name, fh, "application/zip")}, timeout=600)
    assert r.status_code == 202, r.text
    return r.json()["task_url"]


def assert_failed_once(system: System, task_url: str, task: dict, rows_before: dict) -> None:
    """FAILURE, announced once, one (failure) mail, nothing written."""
    task_id = task_id_of(task_url)
    system.settle(task_id)
    assert task["state"] == "FAILURE", task
    assert len(system.tap.of(task_id, "import_failed")) == 1
    assert system.tap.of(task_id, "import_completed") == []
    assert system.wait_mail(task_id) == ["import_failed"]
    assert system.event_rows() == rows_before
    assert system.client.get(task_url).json() == task  # terminal means terminal


# --- item 3: relation fan-out ---------------------------------------------------------------------------------------

def test_session_with_100000_speakers_fails_once_naming_the_record(default_system, tmp_path):
    system = default_system
    archive = write_archive(tmp_path / "fan_out.zip", fan_out_files(100_000))
    assert archive.stat().st_size < 2 * 2**20  # about 1 MB: small as an upload, huge as a relation
    before = system.event_rows()
    task_url = submit_file(system.client, archive)
    # Refused while the list is read: no quadratic write holding the database (470 s before the fix).
    task = system.client.wait_task(task_url, timeout=90)
    assert task["result"]["code"] == "too_many_relations", task
    assert (task["result"]["file"], task["result"]["record_id"], task["result"]["field"]) == ("sessions", 1,
                                                                                             "speakers")
    assert "more than 1000 speakers" in task["result"]["message"]
    assert_failed_once(system, task_url, task, before)


def test_session_below_the_limit_imports_in_linear_time(tuned_system, tmp_path):
    # 50,000 speakers on one session (the limit is raised to that here): 57 s with the quadratic link step, and
    # growing with the square; a few seconds once it is linear. Bound: 30 s on this shared machine.
    system = tuned_system
    archive = write_archive(tmp_path / "wide.zip", fan_out_files(50_000))
    started = time.monotonic()
    task_url = submit_file(system.client, archive)
    task = system.client.wait_task(task_url, timeout=180)
    elapsed = time.monotonic() - started
    assert task["state"] == "SUCCESS", task
    assert task["result"]["counts"]["speakers"] == 50_000
    assert task["result"]["counts"]["session_speakers"] == 50_001
    assert elapsed < 30, f"import of one session with 50,000 speakers took {elapsed:.1f} s"


# --- item 3: one run at a time --------------------------------------------------------------------------------------

def test_redelivery_while_the_first_run_is_alive_does_not_run_again(tuned_system, tmp_path):
    system = tuned_system
    archive = write_archive(tmp_path / "big.zip", big_files(40_000))  # an import of several seconds
    events_before = system.event_rows()["events"]
    task_url = submit_file(system.client, archive)
    task_id = task_id_of(task_url)
    system.tap.wait_for(task_id, "import_started")
    # The importer is working on it: cut its consumer connection, as a missed heartbeat does. The broker delivers
    # the request again at once, while the first run goes on.
    close_connection(consumer_connection(system.vhost, IMPORT_REQUEST_QUEUE))
    task = system.client.wait_task(task_url, timeout=180)
    system.settle(task_id)
    # The management API counts from periodic statistics (every 5 s): a quick import ends before the redelivery
    # shows. Wait for the count, not for a guess at its delay.
    deadline = time.monotonic() + 30
    while (stats := (queue_info(system.vhost, IMPORT_REQUEST_QUEUE) or {}).get("message_stats", {})).get(
            "redeliver", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stats.get("redeliver", 0) >= 1, stats  # the broker did deliver the request a second time
    assert task["state"] == "SUCCESS", task
    assert system.event_rows()["events"] == events_before + 1
    assert len(system.tap.of(task_id, "import_started")) == 1  # the redelivery waited and did no work
    assert len(system.tap.of(task_id, "import_completed")) == 1
    assert system.tap.of(task_id, "import_failed") == []
    assert system.wait_mail(task_id) == ["import_completed"]


def test_redelivery_while_the_first_run_is_alive_does_not_run_again_on_postgresql(postgres_url, tmp_path):
    # The same on PostgreSQL, where the lease row's lock (not SQLite's database lock) fences the write.
    with system_for(tmp_path, postgres_url, JOB_LEASE_SECONDS="6") as system:
        test_redelivery_while_the_first_run_is_alive_does_not_run_again(system, tmp_path)


def test_request_whose_worker_keeps_dying_ends_failure_and_is_dead_lettered(tuned_system, tmp_path):
    system = tuned_system
    archive = write_archive(tmp_path / "big.zip", big_files(8000))
    before = system.event_rows()
    task_url = submit_file(system.client, archive)
    task_id = task_id_of(task_url)
    for delivery in (1, 2):  # JOB_MAX_DELIVERIES=2: both deliveries lose their worker mid-import
        system.tap.wait_for(task_id, "import_started", count=delivery, timeout=120)
        system.stack.stop("importer", kill=True)
        system.stack.start("importer")
    task = system.client.wait_task(task_url, timeout=120)
    assert task["result"]["code"] == "too_many_deliveries", task
    assert "stopped 2 times" in task["result"]["message"]
    assert_failed_once(system, task_url, task, before)
    assert len(system.tap.of(task_id, "import_started")) == 2  # the third delivery did not start the work
    # The management API reports a queue's counts from periodic statistics: a new queue shows no count, then 0 for a
    # few seconds under load, before the parked message appears.
    deadline = time.monotonic() + 30
    while not (parked := queue_info(system.vhost, dead_letter_queue(IMPORTER)) or {}).get("messages"):
        assert time.monotonic() < deadline, parked
        time.sleep(0.2)
    assert parked["messages"] == 1, parked


# --- item 4: huge strings -------------------------------------------------------------------------------------------

def string_archive(path: Path, chars: int) -> Path:
    """The base event with one session title of ``chars`` random hex digits (incompressible enough to pass the
    compression-ratio check), written without holding a second copy."""
    files = base_files()
    marker = "@@TITLE@@"
    files["sessions"][0]["title"] = marker
    head, tail = json.dumps(files["sessions"], separators=(",", ":")).split(marker)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, value in files.items():
            if name != "sessions":
                zf.writestr(name, json.dumps(value))
        with zf.open("sessions", "w", force_zip64=True) as out:
            out.write(head.encode())
            left = chars
            while left:
                block = min(left, 8 * 2**20)
                out.write(os.urandom(block // 2 + 1).hex()[:block].encode())
                left -= block
            out.write(tail.encode())
    return path


def test_long_string_is_refused_while_streaming_naming_the_field(tuned_system, tmp_path):
    system = tuned_system  # IMPORT_MAX_STRING_CHARS=100000
    before = system.event_rows()
    task_url = submit_file(system.client, string_archive(tmp_path / "long.zip", 20 * 2**20))
    task = system.client.wait_task(task_url, timeout=120)
    assert task["result"]["code"] == "string_too_long", task
    assert (task["result"]["file"], task["result"]["record_id"], task["result"]["field"]) == ("sessions", 1, "title")
    assert "longer than 100000 characters" in task["result"]["message"]
    assert_failed_once(system, task_url, task, before)


def test_200_mb_string_at_the_default_limit_fails_once(default_system, tmp_path):
    system = default_system
    before = system.event_rows()
    archive = string_archive(tmp_path / "huge.zip", 200 * 2**20)
    task_url = submit_file(system.client, archive)
    # Refused after ~12 MB of the string: no call that blocks the hub for minutes, no redelivery loop.
    task = system.client.wait_task(task_url, timeout=120)
    assert task["result"]["code"] == "string_too_long", task
    assert (task["result"]["file"], task["result"]["field"]) == ("sessions", "title")
    assert_failed_once(system, task_url, task, before)
    assert len(system.tap.of(task_id_of(task_url), "import_started")) == 1
