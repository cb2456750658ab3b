"""The task id on every JSON log line of a job: TaskLogContext sets it per worker, greenthreads never mix them.

A real nameko container (eventlet, as in production) runs two workers at once; each logs, yields to the other, spawns
a helper greenthread through ``carry_context`` and logs again. No broker is needed: the entrypoint is nameko's
``dummy``, driven by ``entrypoint_hook`` (which runs the whole worker lifecycle, worker_setup included).
"""

from __future__ import annotations

import json
import logging

import eventlet
from eventlet.event import Event
from nameko.containers import ServiceContainer
from nameko.testing.services import dummy, entrypoint_hook

from shared.dependencies import TaskLogContext
from shared.logs import TASK_ID, JsonFormatter, carry_context

log = logging.getLogger("tests.task_log_context")


class TwoStepService:
    name = "two_step"
    log_context = TaskLogContext()

    @dummy
    def handle(self, payload: dict, gate: Event) -> None:
        log.info("first")
        gate.wait()  # both workers are now inside their jobs at once
        helper = carry_context(eventlet.spawn)(log.info, "from a helper greenthread")
        helper.wait()
        eventlet.sleep(0)
        log.info("last")

    @dummy
    def plain(self) -> None:
        log.info("no task here")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_concurrent_jobs_keep_their_own_task_ids() -> None:
    handler = Lines()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    container = ServiceContainer(TwoStepService, {})
    container.start()
    try:
        gate = Event()
        with entrypoint_hook(container, "handle") as handle:
            jobs = [eventlet.spawn(handle, {"task_id": task}, gate) for task in ("task-a", "task-b")]
            eventlet.sleep(0.05)  # let both reach the gate: the jobs overlap for certain
            gate.send(True)
            for job in jobs:
                job.wait()
        with entrypoint_hook(container, "plain") as plain:
            plain()
    finally:
        container.stop()
        log.removeHandler(handler)

    by_task: dict[str, list[str]] = {}
    for line in handler.lines:
        by_task.setdefault(line.get("task_id", "-"), []).append(line["message"])
    assert by_task == {
        "task-a": ["first", "from a helper greenthread", "last"],
        "task-b": ["first", "from a helper greenthread", "last"],
        "-": ["no task here"],
    }
    assert TASK_ID.get() is None  # nothing leaked into the test's own context


def test_a_plain_spawn_does_not_inherit_the_id() -> None:
    """Why ``carry_context`` exists: a greenthread starts with an empty context of its own."""
    token = TASK_ID.set("task-c")
    try:
        assert eventlet.spawn(TASK_ID.get).wait() is None
        assert carry_context(eventlet.spawn)(TASK_ID.get).wait() == "task-c"
    finally:
        TASK_ID.reset(token)
