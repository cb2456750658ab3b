"""The import flow on PostgreSQL, the production database: concurrency, idempotency, rollback (one stack)."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa
from nameko.standalone.events import event_dispatcher

from shared.contracts import GATEWAY, IMPORT_REQUEST_QUEUE, IMPORT_REQUESTED
from shared.models import events as m
from tests.conftest import SAMPLES_DIR
from tests.support.e2e import stack_for
from tests.support.hostile_archives import base_files, encode, hostile_cases, write_zip
from tests.support.import_helpers import (
    archive_bytes,
    expected_counts,
    row_counts,
    staged_import,
    submit_ok,
    wait_all,
    wait_queue_drained,
)

SAMPLE_ROOT = SAMPLES_DIR / "open_event"
# Bookkeeping of other services: tasks, mails, storage's object index (the uploaded archive is indexed there).
NOT_EVENT_DATA = ("tasks", "mail_deliveries", "storage_objects", "storage_backends", "job_leases")


@pytest.fixture
def pg_system(tmp_path, postgres_url):
    with stack_for(tmp_path, {"alice": False, "bob": False}, database_url=postgres_url) as run:
        run.start()
        yield run.env, run


def test_import_on_postgresql(pg_system, tmp_path):
    env, run = pg_system
    alice = run.client("alice")
    samples = [SAMPLE_ROOT / "legacy" / "FOSSASIA16", SAMPLE_ROOT / "legacy" / "OTS16",
               SAMPLE_ROOT / "dasherized" / "PyCon17"]
    samples = [s for s in samples if s.exists()]
    # The same archive three times at once, with an identifier (unique column): every import succeeds.
    files = base_files()
    files["event"]["identifier"] = "pg-race"
    ident = write_zip(tmp_path / "ident.zip", encode(files)).read_bytes()
    urls = {f"{s.name}-{i}": submit_ok(alice, archive_bytes(s), f"{s.name}.zip") for s in samples for i in (1, 2)}
    urls |= {f"ident-{i}": submit_ok(alice, ident, "ident.zip") for i in range(3)}
    tasks = wait_all(alice, list(urls.values()), timeout=120)
    results = {name: tasks[url] for name, url in urls.items()}
    assert all(t["state"] == "SUCCESS" for t in results.values()), {n: t["result"] for n, t in results.items()}
    assert len({t["result"]["id"] for t in results.values()}) == len(results)
    for sample in samples:
        for i in (1, 2):
            detail = alice.get(f"/v1/events/{results[f'{sample.name}-{i}']['result']['id']}").json()
            assert detail["counts"] == expected_counts(sample)
    with env.db() as session:
        ids = [results[f"ident-{i}"]["result"]["id"] for i in range(3)]
        identifiers = session.scalars(sa.select(m.Event.identifier).where(m.Event.id.in_(ids))).all()
        assert sorted(identifiers, key=lambda i: i or "") == [None, None, "pg-race"]

    # A hostile archive and a broken sample change nothing.
    before = row_counts(env.database_url, exclude=NOT_EVENT_DATA)
    cases = [c for c in hostile_cases(tmp_path / "hostile") if c.limits is None and c.path.is_file()
             and 0 < c.path.stat().st_size < 2**20][:15]
    failing = {c.name: submit_ok(alice, c.path.read_bytes(), c.path.name) for c in cases}
    done = wait_all(alice, list(failing.values()), timeout=120)
    for case in cases:
        task = done[failing[case.name]]
        assert (task["state"], task["result"]["code"]) == ("FAILURE", case.expected_code), (case.name, task)
    assert row_counts(env.database_url, exclude=NOT_EVENT_DATA) == before


def test_duplicate_delivery_on_postgresql(pg_system):
    env, run = pg_system
    folder = SAMPLE_ROOT / "legacy" / "OTS16"
    if not folder.is_dir():
        pytest.skip("OTS16 sample absent")
    payload = staged_import(env, folder, {"id": run.users["bob"], "email": "bob@example.org"})
    task_id = payload["task_id"]
    before = row_counts(env.database_url, exclude=NOT_EVENT_DATA)
    dispatch = event_dispatcher({"AMQP_URI": env.env["AMQP_URI"], "serializer": "json"})
    threads = [threading.Thread(target=dispatch, args=(GATEWAY, IMPORT_REQUESTED, payload)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    bob = run.client("bob")
    task = bob.wait_task(f"/v1/tasks/{task_id}", timeout=60)
    assert task["state"] == "SUCCESS", task
    wait_queue_drained(env.vhost, IMPORT_REQUEST_QUEUE)
    after = row_counts(env.database_url, exclude=NOT_EVENT_DATA)
    assert after["events"] == before["events"] + 1
    assert after["imported_events"] == before["imported_events"] + 1
    assert after["sessions"] == before["sessions"] + len(json.loads((folder / "sessions").read_text()))
