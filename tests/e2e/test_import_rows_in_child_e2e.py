"""``IMPORT_ROWS_IN_CHILD=1`` over HTTP against the real services and RabbitMQ: a realistic import of 3,000 sessions
(FOSSASIA16 cycled, ``bench/realistic.py``) builds its rows in a forked child of the importer, ends SUCCESS with every
record counted, and the importer is left without a child; the same import on the default (rows built inline) gives
the same event back through the API. An importer killed while its child builds rows leaves no child running, and
the import is done again by the importer started in its place."""

from __future__ import annotations

import time

import psutil
import pytest

from bench import realistic
from tests.support.e2e import stack_for
from tests.support.import_helpers import submit_ok

SESSIONS = 3000


@pytest.fixture
def archive(samples_dir, tmp_path) -> realistic.Archive:
    sample = realistic.load_sample(samples_dir / "open_event" / "legacy" / "FOSSASIA16")
    return realistic.write_archive(realistic.cycle_event(sample, SESSIONS), tmp_path / "event.zip")


def _import(tmp_path, archive: realistic.Archive, **env: str) -> tuple[dict, dict, str, list[psutil.Process]]:
    with stack_for(tmp_path, {"alice": False}, **env) as run:
        run.start()
        client = run.client("alice")
        task = client.wait_task(submit_ok(client, archive.path.read_bytes()), timeout=120)
        event = client.get(f"/v1/events/{task['result']['id']}").json() if task["state"] == "SUCCESS" else {}
        children = psutil.Process(run.pid("importer")).children()
        return task, event, run.log_text(), children


def test_an_import_with_rows_built_in_a_child_matches_the_default(archive, tmp_path):
    task, event, log, children = _import(tmp_path / "child", archive, IMPORT_ROWS_IN_CHILD="1")
    assert task["state"] == "SUCCESS", task
    assert "write (rows built in a child process)" in log
    assert children == []  # reaped
    counts = task["result"]["counts"]
    assert counts["sessions"] == SESSIONS and counts["speakers"] > 0 and counts["session_speakers"] > 0

    inline_task, inline_event, inline_log, _ = _import(tmp_path / "inline", archive)
    assert inline_task["state"] == "SUCCESS", inline_task
    assert "rows built in a child process" not in inline_log
    assert inline_task["result"]["counts"] == counts
    assert {k: v for k, v in inline_event.items() if k != "id"} == {k: v for k, v in event.items() if k != "id"}


def _wait_child(pid: int, timeout: float) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while not (children := psutil.Process(pid).children()):
        assert time.monotonic() < deadline, "the importer never forked a child"
        time.sleep(0.005)
    return children[0]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_an_importer_killed_while_its_child_builds_rows_leaves_no_child(samples_dir, tmp_path):
    sample = realistic.load_sample(samples_dir / "open_event" / "legacy" / "FOSSASIA16")
    big = realistic.write_archive(realistic.cycle_event(sample, 20000), tmp_path / "big.zip")  # a second of rows
    with stack_for(tmp_path / "run", {"alice": False}, IMPORT_ROWS_IN_CHILD="1") as run:
        run.start()
        client = run.client("alice")
        task_url = submit_ok(client, big.path.read_bytes())
        child = _wait_child(run.pid("importer"), timeout=120)
        run.kill("importer")
        deadline = time.monotonic() + 10
        while not _gone(child):
            assert time.monotonic() < deadline, f"child {child.pid} still {child.status()} after its parent died"
            time.sleep(0.01)
        run.restart("importer")
        task = client.wait_task(task_url, timeout=180)
        assert task["state"] == "SUCCESS", task
        assert task["result"]["counts"]["sessions"] == 20000
