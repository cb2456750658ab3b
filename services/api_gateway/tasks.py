"""The tasks view: one row per job, moved forward by status events.

HTTP clients see the Open Event Server's contract (README, "Task contract"): ``state`` is
``WAITING`` while the task is underway, then ``SUCCESS`` or ``FAILURE``, and a terminal state never changes. The finer
phase is ``status`` (``queued`` -> ``started`` -> ``progress``), which only moves forward, with ``progress``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.contracts import FAILURE, IN_PROGRESS, QUEUED, STARTED, TERMINAL_STATES, WAITING
from shared.models import Task, utcnow

# Status events travel on separate queues, so they may arrive out of order: a phase only moves forward, and only
# while the task is underway.
_STATUS_FROM = {
    STARTED: (QUEUED,),
    IN_PROGRESS: (QUEUED, STARTED, IN_PROGRESS),
}


def create_task(session: Session, *, kind: str, event_id: int | None, user_id: int, email: str,
                params: dict[str, Any], task_id: str | None = None) -> Task:
    # Imports choose their id before the task row exists: the uploaded archive's storage key is derived from it.
    task = Task(id=task_id or str(uuid.uuid4()), kind=kind, event_id=event_id, requested_by=user_id,
                requester_email=email, params=params, state=WAITING, status=QUEUED)
    session.add(task)
    session.flush()
    return task


def set_status(session: Session, task_id: str, status: str, *, progress: dict[str, Any] | None = None) -> bool:
    """Move an underway task's phase to ``status`` (``started`` or ``progress``) if that is forward."""
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    changed = session.execute(
        update(Task).where(Task.id == task_id, Task.state == WAITING, Task.status.in_(_STATUS_FROM[status]))
        .values(**values)
    ).rowcount
    return bool(changed)


def finish(session: Session, task_id: str, state: str, result: dict[str, Any]) -> bool:
    """End an underway task as ``SUCCESS`` or ``FAILURE`` with ``result``; a terminal state never changes."""
    if state not in TERMINAL_STATES:
        raise ValueError(f"{state!r} is not a terminal state")
    changed = session.execute(
        update(Task).where(Task.id == task_id, Task.state == WAITING)
        .values(state=state, result=result, updated_at=utcnow())
    ).rowcount
    return bool(changed)


def fail_stale(session: Session, older_than: datetime) -> int:
    """End tasks whose worker took them and then went silent (killed for good): never underway forever.

    Only tasks a worker took (status started/progress) qualify: a queued request sits safely in its durable queue,
    however long the worker is down. Exports report progress at least every few seconds while they work.
    """
    return session.execute(
        update(Task)
        .where(Task.state == WAITING, Task.status.in_((STARTED, IN_PROGRESS)), Task.updated_at < older_than)
        .values(state=FAILURE, updated_at=utcnow(),
                result={"code": "worker_lost", "message": "The worker handling this task stopped responding."})
    ).rowcount


def task_view(task: Task) -> dict[str, Any]:
    """The body of ``GET /v1/tasks/{id}`` (README, "Task contract")."""
    view: dict[str, Any] = {
        "id": task.id,
        "kind": task.kind,
        "event_id": task.event_id,
        "state": task.state,
        "status": task.status,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
    }
    if task.state == WAITING and task.status == IN_PROGRESS and task.progress:
        view["progress"] = task.progress
    if task.state in TERMINAL_STATES:
        view["result"] = task.result
    return view


def _iso(naive_utc: Any) -> str:
    return naive_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
