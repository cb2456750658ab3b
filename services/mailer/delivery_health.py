"""Is mail being delivered? The mailer's health report: recent outcomes from the delivery log and an SMTP probe.

A mailer process that runs but whose mail server refuses everything (or is down) delivers nothing: that is a degraded
system, so the report says ``degraded`` with a reason when

- the probe fails (connect, TLS, AUTH, EHLO or NOOP; no mail is sent), or
- ``MAIL_HEALTH_FAILURES`` (default 2) or more delivery attempts failed since the last mail that was delivered.

Attempts refused up front (an invalid address, 0 attempts) say nothing about the mail path and are not counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.mailer import outbox
from services.mailer.settings import MailSettings
from services.mailer.smtp import SmtpTransport
from shared.contracts import UTC_FORMAT
from shared.models.mailer import MailDelivery

T = MailDelivery.__table__.c
PROBE_TIMEOUT = 2.0  # seconds: the gateway waits 3 s for the whole health answer


def _time(value: datetime | None) -> str | None:
    return value.strftime(UTC_FORMAT) if value is not None else None


def outcomes(session: Session) -> dict[str, Any]:
    """Last delivered mail, last failed attempt (with the server's reply), failed attempts since, pending retries."""
    last_sent = session.execute(
        select(T.sent_at, T.task_id, T.kind).where(T.state == outbox.SENT).order_by(T.sent_at.desc()).limit(1)
    ).first()
    # Rows whose latest attempt failed: still pending a retry, failed for good, uncertain, or claimed again after a
    # failure (their ``attempts`` already counts the attempt in flight, which has not failed).
    failing = [T.attempts > 0, T.last_error.is_not(None), T.state != outbox.SENT]
    since = [*failing, T.updated_at >= last_sent.sent_at] if last_sent is not None else failing
    in_flight = case((T.state.in_((outbox.SENDING, outbox.TRANSMITTING)), 1), else_=0)
    failed_attempts = session.scalar(select(func.sum(T.attempts - in_flight)).where(*since)) or 0
    last_failure = session.execute(
        select(T.updated_at, T.task_id, T.kind, T.state, T.last_error, T.attempts).where(*failing)
        .order_by(T.updated_at.desc(), T.id.desc()).limit(1)
    ).first()
    pending = session.scalar(select(func.count()).where(T.state == outbox.PENDING, T.attempts > 0)) or 0
    session.rollback()
    return {
        "last_success": None if last_sent is None else {
            "at": _time(last_sent.sent_at), "task_id": last_sent.task_id, "kind": last_sent.kind},
        "last_failure": None if last_failure is None else {
            "at": _time(last_failure.updated_at), "task_id": last_failure.task_id, "kind": last_failure.kind,
            "state": last_failure.state, "attempts": last_failure.attempts, "reason": last_failure.last_error},
        "failed_attempts_since_last_success": int(failed_attempts),
        "pending_retries": int(pending),
    }


def report(db: sessionmaker[Session], transport: SmtpTransport, settings: MailSettings) -> dict[str, Any]:
    """The ``delivery`` part of the mailer's health answer: ``ok``, ``reason`` when not, and the facts behind it."""
    problem = transport.probe(min(PROBE_TIMEOUT, settings.smtp_timeout))
    with db() as session:
        facts = outcomes(session)
    reasons = []
    if problem is not None:
        reasons.append(f"the mail server {settings.smtp_host}:{settings.smtp_port} does not answer a probe: "
                       f"{problem}")
    failed = facts["failed_attempts_since_last_success"]
    if failed >= settings.health_failures:
        last = facts["last_failure"]
        reasons.append(f"{failed} delivery attempt(s) failed since the last delivered mail; last: {last['reason']}")
    return {"ok": not reasons, "reason": "; ".join(reasons) or None,
            "smtp": {"host": settings.smtp_host, "port": settings.smtp_port, "ok": problem is None,
                     "error": problem},
            "threshold": settings.health_failures, **facts}
