"""Log hygiene and format for every service (wired in ``deploy/nameko.yml``'s ``LOGGING``).

- ``Hygiene`` (a handler filter, so it sees every logger's records):
  * query strings are cut from everything logged (``/objects/k?expires=..&signature=..`` -> ``/objects/k?…``):
    signed links are bearer credentials, and the access logs of the gateway and the storage data plane print
    request lines verbatim;
  * errors nameko logs as "expected" (a client's 4xx, an RPC's declared errors) keep their one-line message but lose
    the traceback, which says nothing about a fault of ours.
- ``LOG_FORMAT=json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``, ``exc`` when there is
  a traceback) for log collectors; anything else is the plain text format.

SQL parameters never reach the logs: engines are created with ``hide_parameters`` (``shared/db.py``) and the
``sqlalchemy`` loggers stay at WARNING.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A "?" after a path or URL, up to the next blank or quote: the query string of a request line or a link.
_QUERY_RE = re.compile(r"(?<=[^\s?\"'])\?[^\s\"']+")
_EXPECTED_PREFIX = "(expected) error handling worker"


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
        if record.exc_info:
            entry["exc"] = strip_queries(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def formatter() -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` asks for (``json`` or the plain text default)."""
    if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
        return JsonFormatter()
    return TextFormatter()
