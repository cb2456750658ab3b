"""Exit codes and the one exception type commands raise: every failure ends as one line on stderr."""

from __future__ import annotations

from typing import Any

OK = 0
FAILED = 1  # the server refused the request (4xx/5xx) or the job ended FAILURE
USAGE = 2  # bad arguments (argparse's own code)
UNAVAILABLE = 3  # the server cannot be reached, or there is no valid login (none stored, or 401)
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the request or the job failed (the server answered 4xx/5xx, or the task ended FAILURE)
  2    usage error (bad arguments)
  3    cannot reach the server, or not logged in (no login stored, or the server answered 401)
  130  interrupted (Ctrl-C)"""


class CliError(Exception):
    """A failure to report: ``message`` on stderr, ``exit_code`` for the shell, ``document`` for ``--json``."""

    def __init__(self, message: str, exit_code: int = FAILED, code: str | None = None,
                 status: int | None = None, document: dict[str, Any] | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []
        self.message = message
        self.exit_code = exit_code
        self.code = code
        self.status = status
        self.document = document

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document of a failure: the task that failed, or ``{"error": {...}}``."""
        if self.document is not None:
            return self.document
        error: dict[str, Any] = {"code": self.code or "error", "message": self.message}
        if self.status is not None:
            error["status"] = self.status
        return {"error": error}

    def line(self) -> str:
        where = f" ({self.code}" + (f", HTTP {self.status})" if self.status else ")") if self.code else ""
        return f"eventport: error: {self.message}{where}"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C with a note on what is left (a task that goes on, a ``.part`` to resume): still exit 130."""
