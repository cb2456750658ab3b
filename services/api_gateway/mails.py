"""The admin view of the mailer's delivery log (``GET /v1/admin/mails``): states and errors, never message bodies.

A stored message holds the signed download link, which is as good as the archive itself: it is not listed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.contracts import UTC_FORMAT
from shared.http import ApiError
from shared.models import MailDelivery, User

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "Only admins may see the mail log.")


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "invalid_request", f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(raw)


def _time(value: Any) -> str | None:
    return value.strftime(UTC_FORMAT) if value is not None else None


def recent_deliveries(session: Session, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` deliveries, newest first."""
    rows = session.scalars(select(MailDelivery).order_by(MailDelivery.id.desc()).limit(limit))
    return [
        {
            "id": r.id, "task_id": r.task_id, "kind": r.kind, "event_id": r.event_id, "recipient": r.recipient,
            "subject": r.subject, "state": r.state, "attempts": r.attempts, "last_error": r.last_error,
            "message_id": r.message_id, "created_at": _time(r.created_at), "updated_at": _time(r.updated_at),
            "sent_at": _time(r.sent_at), "next_attempt_at": _time(r.next_attempt_at),
            # When the mailer tries again: only a pending row waits for a retry (for sending/transmitting rows
            # next_attempt_at is the end of the sender's lease, not a retry).
            "next_retry_at": _time(r.next_attempt_at) if r.state == "pending" else None,
        }
        for r in rows
    ]
