"""Log hygiene and format for every service (wired in ``deploy/nameko.yml``'s ``LOGGING``).

- ``Hygiene`` (a handler filter, so it sees every logger's records):
  * query strings are cut from everything logged (``/objects/k?expires=..&signature=..`` -> ``/objects/k?…``):
    signed links are bearer credentials, and the access logs of the gateway and the storage data plane print
    request lines verbatim;
  * errors nameko logs as "expected" (a client's 4xx, an RPC's declared errors) keep their one-line message but lose
    the traceback, which says nothing about a fault of ours.
- ``LOG_FORMAT=json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``, ``task_id`` while a
  job's handler runs, ``exc`` when there is a traceback) for log collectors; anything else is the plain text format.
- The task id comes from ``TASK_ID``, a context variable: ``shared.dependencies.TaskLogContext`` sets it for each
  worker whose event payload names a task. Every greenthread has its own context (greenlet gives each one its own),
  so concurrent jobs never mix ids; a greenthread a job spawns gets the id only through ``carry_context``.

SQL parameters never reach the logs: engines are created with ``hide_parameters`` (``shared/db.py``) and the
``sqlalchemy`` loggers stay at WARNING.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A "?" after a path or URL, up to the next blank or quote: the query string of a request line or a link.
_QUERY_RE = re.compile(r"(?<=[^\s?\"'])\?[^\s\"']+")
_EXPECTED_PREFIX = "(expected) error handling worker"

# The task whose job the current greenthread works on (None outside jobs).
TASK_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
F = TypeVar("F", bound=Callable[..., Any])


def carry_context(spawn: F) -> F:
    """``spawn`` (``eventlet.spawn``, a pool's ``spawn``) whose greenthreads run in a copy of the caller's context,
    so the lines they log carry the caller's task id (a new greenthread otherwise starts with an empty context)."""

    def spawn_in_context(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return spawn(contextvars.copy_context().run, func, *args, **kwargs)

    return spawn_in_context  # type: ignore[return-value]


def strip_queries(text: str) -> str:
    return _QUERY_RE.sub("?…", text)


class Hygiene(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.msg, str) and record.msg.startswith(_EXPECTED_PREFIX):
            record.exc_info = None
            record.exc_text = None
        try:
            message = record.getMessage()
        except Exception:  # a malformed call (args not matching msg): leave it to the handler's error reporting
            return True
        cleaned = strip_queries(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatException(self, ei) -> str:  # noqa: ANN001, N802 - logging's API
        return strip_queries(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = TASK_ID.get()
        if task_id is not None:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["exc"] = strip_queries(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def formatter() -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` asks for (``json`` or the plain text default)."""
    if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
        return JsonFormatter()
    return TextFormatter()
