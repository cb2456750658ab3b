"""Per-user quotas and the lifetime of uploaded import archives (issue 9 item 6).

- **Jobs in flight** (``QUOTA_JOBS_IN_FLIGHT``, default 100; 0: no limit): exports and imports a user requested that
  have not ended (``WAITING`` or underway). One more is ``429 too_many_jobs`` with ``Retry-After``.
- **Stored bytes** (``QUOTA_STORED_BYTES``, default 5 GiB; 0: no limit): what a user holds in storage through the
  upload API and import archives (storage counts the objects signed with ``owner``). An upload that would go past
  it is ``413 quota_exceeded``: refused at once when the quota is used up or the ``Content-Length`` says so, else
  cut off while streaming at the byte that crosses it (files of the same request stored before are removed again).
- **Import archives expire** ``IMPORT_ARCHIVE_KEEP_DAYS`` (default 7) days after the import ended (either way): the
  upload is stored with that lifetime already (so an archive whose end was never heard of still goes), and the end
  of the import restarts the clock. Re-hosted media and upload-API files do not expire.

Plain functions; ``service.py`` wires them in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import contracts
from shared.http import ApiError
from shared.models.gateway import Task

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the files, for the Content-Length pre-check
JOBS_RETRY_AFTER = 30


@dataclass(frozen=True)
class QuotaSettings:
    jobs_in_flight: int  # 0: no limit
    stored_bytes: int  # 0: no limit
    import_archive_keep_seconds: int


def load_quota_settings(environ: Mapping[str, str] | None = None) -> QuotaSettings:
    environ = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        value = environ.get(name)
        return default if value in (None, "") else value

    keep_days = float(get("IMPORT_ARCHIVE_KEEP_DAYS", "7"))
    if keep_days <= 0:
        raise ValueError("IMPORT_ARCHIVE_KEEP_DAYS must be positive")
    return QuotaSettings(
        jobs_in_flight=max(0, int(get("QUOTA_JOBS_IN_FLIGHT", "100"))),
        stored_bytes=max(0, int(get("QUOTA_STORED_BYTES", str(5 * 1024**3)))),
        import_archive_keep_seconds=max(1, int(keep_days * 86400)),
    )


def check_jobs_in_flight(session: Session, user_id: int, limit: int) -> None:
    """429 when the user already has ``limit`` exports and imports that have not ended."""
    if limit <= 0:
        return
    running = session.scalar(select(func.count()).select_from(Task).where(
        Task.requested_by == user_id, Task.state.not_in((contracts.SUCCESS, contracts.FAILURE))))
    if running >= limit:
        raise ApiError(429, "too_many_jobs",
                       f"You have {running} exports and imports under way (the limit is {limit}); wait for one to "
                       "finish.", headers={"Retry-After": str(JOBS_RETRY_AFTER)})


def quota_error(limit: int) -> ApiError:
    return ApiError(413, "quota_exceeded", f"This upload would take your stored files past your quota of {limit} "
                                           "bytes (uploads and import archives).")


class ByteBudget:
    """What is left of a user's byte quota for one request; ``meter`` counts the bytes of every file against it."""

    def __init__(self, limit: int, stored: int) -> None:
        self.limit = limit
        self.left = None if limit <= 0 else limit - stored

    def check_start(self, content_length: int | None) -> None:
        """Refuse before a byte is read: the quota is used up, or the declared body cannot fit."""
        if self.left is None:
            return
        if self.left <= 0 or (content_length is not None and content_length > self.left + MULTIPART_SLACK):
            raise quota_error(self.limit)

    def meter(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self.left is not None:
                self.left -= len(chunk)
                if self.left < 0:
                    raise quota_error(self.limit)
            yield chunk


def budget_for(stored_bytes: Callable[[int], int], user_id: int, settings: QuotaSettings) -> ByteBudget:
    """The user's budget; ``stored_bytes`` asks storage (only when there is a quota)."""
    if settings.stored_bytes <= 0:
        return ByteBudget(0, 0)
    return ByteBudget(settings.stored_bytes, stored_bytes(user_id))
