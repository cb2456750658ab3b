"""The delivery log (``mail_deliveries``): every state change is one committed, conditional UPDATE.

Exactly once, in three rules:
1. One row per task and kind (unique ``dedupe_key``), inserted and committed before any SMTP traffic: a redelivered
   event finds the row and sends nothing.
2. A sender claims a row with a conditional UPDATE (``pending`` -> ``sending``, ``attempts + 1``). ``attempts`` after
   the claim is the sender's fencing token: every later update requires it, so two mailer instances (or a crashed
   sender and its successor) can never both get to DATA with the same row (claim and fence: ``shared/outbox.py``).
3. ``sending`` -> ``transmitting`` is committed right before SMTP DATA. A crash before it left nothing at the server, so
   an expired ``sending`` claim is simply sent again. A crash after it is the one window SMTP cannot close (the server
   may have stored the mail and lost only its reply): we prefer one possibly-lost mail over a duplicate, so an expired
   ``transmitting`` row becomes ``uncertain`` and is never resent (and is announced with ``mail_failed``). An
   explicit reply after DATA is no such window: a 4xx/5xx means the server did not take the message, so the row goes
   back to ``pending`` (4xx, retried) or to ``failed`` (5xx) like a refusal at any earlier step.

Times are naive UTC, like every timestamp of the platform database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import outbox
from shared.models.mailer import MailDelivery

PENDING, SENDING, TRANSMITTING = "pending", "sending", "transmitting"
SENT, FAILED, UNCERTAIN = "sent", "failed", "uncertain"
ACTIVE = (PENDING, SENDING, TRANSMITTING)
TERMINAL = (SENT, FAILED, UNCERTAIN)
MAX_BACKOFF = 900.0  # seconds: however long the window, try at least every 15 minutes

TABLE = MailDelivery.__table__
T = TABLE.c


def dedupe_key(task_id: str, kind: str) -> str:
    return f"{task_id}:{kind}"


@dataclass(frozen=True)
class Notification:
    """A rendered mail about to enter the log."""

    task_id: str
    kind: str
    event_id: int | None
    requester_id: int | None
    recipient: str
    subject: str
    message: str
    message_id: str


@dataclass(frozen=True)
class Claim:
    """The right to send one delivery: ``token`` is the row's ``attempts`` right after claiming it."""

    id: int
    token: int
    recipient: str
    message: str


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): base, 2*base, 4*base... capped."""
    return min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF)


def is_recorded(session: Session, key: str) -> bool:
    return session.scalar(select(MailDelivery.id).where(MailDelivery.dedupe_key == key)) is not None


def record(session: Session, n: Notification, *, now: datetime, refused: str | None = None) -> int | None:
    """Commit a new delivery, due at once (or ``failed`` when ``refused`` says why); None if it already exists."""
    row = MailDelivery(
        dedupe_key=dedupe_key(n.task_id, n.kind), task_id=n.task_id, kind=n.kind, event_id=n.event_id,
        requester_id=n.requester_id, recipient=n.recipient[:255], subject=n.subject, message=n.message,
        message_id=n.message_id, state=FAILED if refused else PENDING, attempts=0, last_error=refused,
        next_attempt_at=None if refused else now, created_at=now, updated_at=now,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # the unique dedupe_key: a concurrent or earlier delivery of the same event won
        session.rollback()
        return None
    return row.id


def _change(session: Session, where: list, **values: object) -> bool:
    return outbox.change(session, TABLE, where, **values)


def _fenced(session: Session, c: Claim, states: tuple[str, ...], **values: object) -> bool:
    return outbox.fenced(session, TABLE, c.id, c.token, states, **values)


def claim(session: Session, delivery_id: int, *, now: datetime, lease: float) -> Claim | None:
    """Take a due ``pending`` row, or a ``sending`` row whose sender vanished before DATA; None if not ours."""
    row = outbox.claim(session, TABLE, delivery_id, states=(PENDING, SENDING), to_state=SENDING, now=now, lease=lease,
                       read=(T.recipient, T.message))
    if row is None:
        return None
    return Claim(id=delivery_id, token=row.attempts, recipient=row.recipient, message=row.message or "")


def begin_data(session: Session, c: Claim, *, now: datetime, lease: float) -> bool:
    """Commit ``transmitting`` just before SMTP DATA; False if the claim was lost (then DATA must not be sent)."""
    return _fenced(session, c, (SENDING,), state=TRANSMITTING, next_attempt_at=now + timedelta(seconds=lease),
                   updated_at=now)


def mark_sent(session: Session, c: Claim, *, now: datetime) -> bool:
    # UNCERTAIN too: a slow but live sender whose lease ran out still reports the truth.
    return _fenced(session, c, (TRANSMITTING, UNCERTAIN), state=SENT, sent_at=now, last_error=None,
                   next_attempt_at=None, updated_at=now)


def mark_failed(session: Session, c: Claim, reason: str, *, now: datetime) -> bool:
    return _fenced(session, c, (SENDING, TRANSMITTING), state=FAILED, last_error=reason, next_attempt_at=None,
                   updated_at=now)


def mark_uncertain(session: Session, c: Claim, reason: str, *, now: datetime) -> bool:
    return _fenced(session, c, (TRANSMITTING,), state=UNCERTAIN, last_error=reason, next_attempt_at=None,
                   updated_at=now)


def retry_later(session: Session, c: Claim, reason: str, *, now: datetime, window: float, base: float) -> str | None:
    """After a temporary failure: back to ``pending`` with a backoff, or ``failed`` once the window is over.

    Returns the new state (None if the claim was lost meanwhile). The window counts from when the mail was recorded.
    """
    created = session.scalar(select(T.created_at).where(T.id == c.id))
    if created is None:
        return None
    deadline = created + timedelta(seconds=window)
    if now >= deadline:
        reason = f"gave up after {c.token} attempt(s) in {window:g} s; last error: {reason}"
        return FAILED if _fenced(session, c, (SENDING, TRANSMITTING), state=FAILED, last_error=reason,
                                 next_attempt_at=None, updated_at=now) else None
    next_at = min(now + timedelta(seconds=backoff(c.token, base)), deadline)
    return PENDING if _fenced(session, c, (SENDING, TRANSMITTING), state=PENDING, last_error=reason,
                              next_attempt_at=next_at, updated_at=now) else None


def expire_transmitting(session: Session, delivery_id: int, *, now: datetime) -> bool:
    """A ``transmitting`` row whose sender vanished: record it as ``uncertain`` (never resent, see module doc)."""
    return _change(
        session, [T.id == delivery_id, T.state == TRANSMITTING, T.next_attempt_at <= now],
        state=UNCERTAIN, next_attempt_at=None, updated_at=now,
        last_error="the mailer stopped while the mail server was receiving this message; it may have been "
                   "delivered, so it is not sent again",
    )


def due(session: Session, *, now: datetime, limit: int) -> list[tuple[int, str]]:
    """(id, state) of rows whose next attempt (pending) or lease end (sending, transmitting) has come."""
    rows = session.execute(
        select(T.id, T.state).where(T.state.in_(ACTIVE), T.next_attempt_at <= now)
        .order_by(T.next_attempt_at).limit(limit)
    ).all()
    session.rollback()
    return [(row.id, row.state) for row in rows]


def unannounced(session: Session, *, before: datetime, limit: int) -> list[int]:
    """Terminal rows whose mail_sent/mail_failed was not published (a crash between commit and publish)."""
    ids = list(session.scalars(
        select(T.id).where(T.announced_at.is_(None), T.state.in_(TERMINAL), T.updated_at <= before)
        .order_by(T.id).limit(limit)
    ))
    session.rollback()
    return ids


def claim_announcement(session: Session, delivery_id: int, *, now: datetime, before: datetime) -> bool:
    """Take an unannounced row for publishing; bumping ``updated_at`` keeps other instances off it for a while."""
    return _change(session, [T.id == delivery_id, T.announced_at.is_(None), T.state.in_(TERMINAL),
                             T.updated_at <= before], updated_at=now)


def mark_announced(session: Session, delivery_id: int, *, now: datetime) -> None:
    _change(session, [T.id == delivery_id], announced_at=now)
