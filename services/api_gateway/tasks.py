"""The tasks view: one row per job, moved forward by status events; a terminal state never changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.contracts import FAILURE, PROGRESS, STARTED, SUCCESS, TERMINAL_STATES, WAITING
from shared.models import Task, utcnow

# Status events travel on separate queues, so they may arrive out of order: a state only moves forward.
_ALLOWED_FROM = {
    STARTED: (WAITING,),
    PROGRESS: (WAITING, STARTED, PROGRESS),
    SUCCESS: (WAITING, STARTED, PROGRESS),
    FAILURE: (WAITING, STARTED, PROGRESS),
}


def create_task(session: Session, *, kind: str, event_id: int | None, user_id: int, email: str,
                params: dict[str, Any], task_id: str | None = None) -> Task:
    # Imports choose their id before the task row exists: the uploaded archive's storage key is derived from it.
    task = Task(id=task_id or str(uuid.uuid4()), kind=kind, event_id=event_id, requested_by=user_id,
                requester_email=email, params=params, state=WAITING)
    session.add(task)
    session.flush()
    return task


def advance(session: Session, task_id: str, state: str, *, progress: dict[str, Any] | None = None,
            result: dict[str, Any] | None = None) -> bool:
    """Move a task to ``state`` if that is forward; returns whether the row changed."""
    values: dict[str, Any] = {"state": state, "updated_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    if result is not None:
        values["result"] = result
    changed = session.execute(
        update(Task).where(Task.id == task_id, Task.state.in_(_ALLOWED_FROM[state])).values(**values)
    ).rowcount
    return bool(changed)


def fail_stale(session: Session, older_than: datetime) -> int:
    """End tasks whose worker took them and then went silent (killed for good): never STARTED forever.

    Only STARTED/PROGRESS tasks qualify: a WAITING request sits safely in its durable queue, however long the worker
    is down. Exports report progress at least every few seconds while they work.
    """
    return session.execute(
        update(Task)
        .where(Task.state.in_((STARTED, PROGRESS)), Task.updated_at < older_than)
        .values(state=FAILURE, updated_at=utcnow(),
                result={"code": "worker_lost", "message": "The worker handling this task stopped responding."})
    ).rowcount


def task_view(task: Task) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": task.id,
        "kind": task.kind,
        "event_id": task.event_id,
        "state": task.state,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
    }
    if task.state == PROGRESS and task.progress:
        view["progress"] = task.progress
    if task.state in TERMINAL_STATES:
        view["result"] = task.result
    return view


def _iso(naive_utc: Any) -> str:
    return naive_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
