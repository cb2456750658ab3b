"""The delivery log admins read (``GET /v1/admin/mails`` through the mailer's ``recent_deliveries`` RPC).

States and errors only, never message bodies: a stored message holds the signed download link, which is as good as
the archive itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.contracts import UTC_FORMAT
from shared.models.mailer import MailDelivery


def _time(value: Any) -> str | None:
    return value.strftime(UTC_FORMAT) if value is not None else None


def recent_deliveries(session: Session, limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` deliveries, newest first; keyset paging: only those older than ``before_id`` (the last
    id of the previous page), so rows added meanwhile never shift a page."""
    query = select(MailDelivery).order_by(MailDelivery.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(MailDelivery.id < before_id)
    rows = session.scalars(query)
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
