"""The tasks view: one row per job, moved forward by status events.

HTTP clients see the Open Event Server's contract (README, "Task contract"): ``state`` is
``WAITING`` while the task is underway, then ``SUCCESS`` or ``FAILURE``, and a terminal state never changes. The finer
phase is ``status`` (``queued`` -> ``started`` -> ``progress``), which only moves forward, with ``progress``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from services.api_gateway import auth, pagination, rules
from services.api_gateway.context import Gateway
from shared.archive.formats import DEFAULT_FORMAT
from shared.contracts import (
    EXPORT_PROGRESS,
    FAILURE,
    IMPORT_PROGRESS,
    IN_PROGRESS,
    QUEUED,
    STARTED,
    SUCCESS,
    TERMINAL_STATES,
    UTC_FORMAT,
    WAITING,
    load_payload,
)
from shared.http import ApiError, json_response
from shared.models.base import utcnow
from shared.models.gateway import Task

TASKS = Task.__table__
# The poll's one statement, built once: its caller and the task (all nulls when there is no such task).
_CALLER_AND_TASK = (select(*auth.CALLER_COLUMNS, TASKS)
                    .select_from(auth.USERS.outerjoin(TASKS, TASKS.c.id == bindparam("task_id")))
                    .where(auth.USERS.c.id == auth.CALLER_ID))

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
    return naive_utc.strftime(UTC_FORMAT)


# --- exports whose archive is gone ------------------------------------------------------------------------------

GONE_FIELDS = {"deleted": "deleted_at", "expired": "expired_at"}


def archive_gone(session: Session, task_id: str, key: str, reason: str, when: str) -> bool:
    """Record on a successful export that its archive was deleted (``reason="deleted"``) or expired at ``when``.

    The state stays SUCCESS (the export did succeed) but the result loses its ``download_url`` and gains
    ``deleted_at`` or ``expired_at``, so clients stop offering a link that answers 410. Only the archive the task
    itself stored (same ``key``) counts; the first report wins. Returns whether the row changed.
    """
    task = session.get(Task, task_id, with_for_update=True)
    if task is None or task.kind != "export" or task.state != SUCCESS or not task.result:
        return False
    result = dict(task.result)
    if result.get("key") != key or any(name in result for name in GONE_FIELDS.values()):
        return False
    result.pop("download_url", None)
    result[GONE_FIELDS[reason]] = when
    task.result = result  # a new dict: the JSON column sees the change
    task.updated_at = utcnow()
    session.flush()
    return True


def export_entry(task: Task) -> dict[str, Any]:
    """One line of ``GET /v1/events/{id}/exports``: the archive's size, digest, retention and download path, or
    when it was deleted / expired instead of the path."""
    view = task_view(task)
    entry: dict[str, Any] = {"task_id": task.id, "state": task.state, "status": task.status,
                             "created_at": view["created_at"], "requested_by": task.requester_email,
                             "options": (task.params or {}).get("options"),
                             "format": (task.params or {}).get("format") or DEFAULT_FORMAT}
    if "progress" in view:
        entry["progress"] = view["progress"]
    result = task.result or {}
    if task.state == SUCCESS and result:
        entry.update(size=result.get("size"), sha256=result.get("sha256"), retention=result.get("retention"))
        gone = {name: result[name] for name in GONE_FIELDS.values() if name in result}
        if gone:
            entry.update(gone)
        else:
            entry["download"] = f"/v1/events/{task.event_id}/exports/{task.id}"
    return entry


# --- routes and status events ------------------------------------------------------------------------------------

def task_url(task_id: str) -> str:
    return f"/v1/tasks/{task_id}"


def accepted(task_id: str) -> Response:
    """``202 {"task_url"}`` with ``Location``: the answer to a queued export or import."""
    url = task_url(task_id)
    return json_response({"task_url": url}, status=202, headers={"Location": url})


def enqueue(gw: Gateway, session: Session, task_id: str, event_type: str, payload: dict[str, Any], what: str) -> None:
    """Commit the new task row, then publish its request; a request the broker refuses ends the task FAILURE (503)."""
    session.commit()  # first: the worker may answer before this request returns, and its events need the row
    try:
        gw.dispatch(event_type, payload)
    except Exception as exc:
        finish(session, task_id, FAILURE, {"code": "broker_unavailable", "message": "The request could not be queued."})
        session.commit()
        raise ApiError(503, "broker_unavailable", f"The {what} could not be queued; try again later.") from exc


def get_task(gw: Gateway, request: Request, task_id: str) -> Response:
    # The most frequent request of all (clients poll it): the caller and the task in one statement on the gateway's
    # row reader, read as a Core row (the view reads the same attributes): one round trip, no ORM session.
    claims = auth.token_user(request.headers.get("Authorization"), gw.config.token_key)
    row = gw.read(lambda conn: conn.execute(_CALLER_AND_TASK, {"caller_id": claims.user_id,
                                                               "task_id": task_id}).first())
    caller = auth.caller_of(row, claims, gw.config.token_key)
    if row.id is None:
        raise ApiError(404, "task_not_found", f"Task {task_id} does not exist.")
    rules.require_task_viewer(caller, row)
    return json_response(task_view(row))


def sort_key(task: Task) -> tuple[datetime, str]:
    """Where a task sits in the time-ordered lists (tasks, exports, imports): newest first, ties by id."""
    return task.created_at, task.id


def list_tasks(gw: Gateway, request: Request, caller: rules.Caller, filters: dict[str, Any]) -> Response:
    """``GET /v1/tasks``: the caller's own tasks (admins' too: theirs only), newest first, each as
    ``GET /v1/tasks/{id}`` answers it plus its ``task_url``; ``filters``: ``kind``, ``state``, ``event_id``."""
    # The filters are part of the list's name: a cursor of one filtered list is refused by another.
    name = "tasks:" + ":".join(str(v) for v in (caller.id, filters.get("kind"), filters.get("state"),
                                                filters.get("event_id")))
    page = pagination.page_query(gw, request, name, 2, (datetime, str))
    query = select(Task).where(Task.requested_by == caller.id)
    for field in ("kind", "state", "event_id"):
        if filters.get(field) is not None:
            query = query.where(getattr(Task, field) == filters[field])
    with gw.db() as session:
        found = list(session.scalars(pagination.keyset(query, (Task.created_at, Task.id), page)))
        return pagination.page_response(gw, request, name, page, found, sort_key,
                                        lambda t: {**task_view(t), "task_url": task_url(t.id)})


def record_status(gw: Gateway, task_id: str, status: str, progress: dict[str, Any] | None = None) -> None:
    with gw.db() as session:
        set_status(session, task_id, status, progress=progress)
        session.commit()


def record_end(gw: Gateway, task_id: str, state: str, result: dict[str, Any]) -> bool:
    with gw.db() as session:
        changed = finish(session, task_id, state, result)
        session.commit()
    return changed


def fail_stale_tasks(gw: Gateway) -> None:
    with gw.db() as session:
        fail_stale(session, utcnow() - timedelta(seconds=gw.config.stale_task_seconds))
        session.commit()


PROGRESS_FIELDS = {EXPORT_PROGRESS: ("stage", "done", "total"), IMPORT_PROGRESS: ("stage", "done", "total", "phase")}


def on_progress(gw: Gateway, event_type: str, payload: dict[str, Any]) -> None:
    data = load_payload(event_type, payload)
    record_status(gw, data["task_id"], IN_PROGRESS, progress={k: data[k] for k in PROGRESS_FIELDS[event_type]})
