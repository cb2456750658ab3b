"""The delivery log (``webhook_deliveries``): recording events and every state change of a delivery.

Exactly one delivery per (event, endpoint), in three rules:
1. One row per endpoint and event (unique ``dedupe_key``), committed before any HTTP traffic: a redelivered AMQP
   event finds its rows and records nothing new. The row holds the body and the ``webhook-id`` (``message_id``)
   every attempt sends, so retries are byte-for-byte the same message.
2. A sender claims a due row with a conditional UPDATE (``pending`` -> ``sending``, ``attempts + 1``, a lease until
   ``next_attempt_at``). ``attempts`` after the claim is its fencing token: every later update requires it, so two
   instances, or a killed sender and its successor, never both record an outcome (``shared/outbox.py``, the mailer's
   too).
3. A sender killed mid-request leaves the row ``sending``; when the lease runs out the row is due again and is sent
   again with the same ``webhook-id``. Unlike mail, HTTP has a receiver-side answer to "maybe delivered": receivers
   dedupe by ``webhook-id`` (the Standard Webhooks rule), so a possible duplicate is preferred to a lost event.

Times are naive UTC, like every timestamp of the platform database.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.webhooks.schedule import next_attempt
from services.webhooks.settings import WebhookSettings
from shared import contracts, outbox
from shared.models.webhooks import WebhookDelivery, WebhookEndpoint

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
ACTIVE = (PENDING, SENDING)

TABLE = WebhookDelivery.__table__
T = TABLE.c
E = WebhookEndpoint.__table__.c


def subject(event_type: str, payload: dict[str, Any]) -> str:
    """What one event is about, the same in every redelivery: the task, or for storage the object and reason."""
    if event_type == contracts.OBJECT_EXPIRED:
        return f"{payload['key']}:{payload['reason']}"
    return str(payload["task_id"])


def body_of(event_type: str, payload: dict[str, Any]) -> str:
    """The request body: ``{"type", "timestamp", "data"}``, ``data`` the AMQP payload as published (plain JSON)."""
    message = {"type": contracts.WEBHOOK_EVENTS[event_type], "timestamp": payload["occurred_at"], "data": payload}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def subscribers(session: Session, event_type: str, event_id: int | None) -> list[int]:
    """Active endpoints that asked for this event type, for this event (or for all events)."""
    name = contracts.WEBHOOK_EVENTS[event_type]
    query = select(E.id, E.events).where(E.active.is_(True), E.deleted_at.is_(None))
    if event_id is None:
        query = query.where(E.event_id.is_(None))
    else:
        query = query.where((E.event_id.is_(None)) | (E.event_id == event_id))
    return [row.id for row in session.execute(query.order_by(E.id)) if name in (row.events or [])]


def record_event(session: Session, event_type: str, payload: dict[str, Any], *, now: datetime) -> int:
    """Commit one pending delivery per subscribed endpoint that has none for this event yet; how many are new."""
    endpoints = subscribers(session, event_type, payload.get("event_id"))
    name, about = contracts.WEBHOOK_EVENTS[event_type], subject(event_type, payload)
    body = body_of(event_type, payload)
    created = 0
    for endpoint_id in endpoints:
        key = f"{endpoint_id}:{name}:{about}"
        if session.scalar(select(T.id).where(T.dedupe_key == key)) is not None:
            continue  # this event was recorded before (a redelivery): nothing new
        session.add(WebhookDelivery(
            endpoint_id=endpoint_id, dedupe_key=key, message_id=f"msg_{uuid.uuid4().hex}", event_type=name,
            body=body, state=PENDING, attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
        ))
        try:
            session.commit()
        except IntegrityError:  # the unique dedupe_key: a concurrent delivery of the same event won
            session.rollback()
            continue
        created += 1
    session.rollback()
    return created


@dataclass(frozen=True)
class Claim:
    """The right to make one attempt: ``token`` is the row's ``attempts`` right after claiming it."""

    id: int
    token: int
    message_id: str
    body: str
    url: str | None  # None: the endpoint was deleted or deactivated
    secret: str | None
    first_attempt_at: datetime


def due(session: Session, *, now: datetime, limit: int) -> list[int]:
    """Rows whose next attempt (pending) or lease end (sending: its sender vanished) has come."""
    ids = list(session.scalars(
        select(T.id).where(T.state.in_(ACTIVE), T.next_attempt_at <= now).order_by(T.next_attempt_at).limit(limit)
    ))
    session.rollback()
    return ids


def claim(session: Session, delivery_id: int, *, now: datetime, lease: float) -> Claim | None:
    """Take a due row for one attempt; None if another sender has it (or it is no longer due)."""
    row = outbox.claim(session, TABLE, delivery_id, states=ACTIVE, to_state=SENDING, now=now, lease=lease,
                       read=(T.message_id, T.body, T.endpoint_id, T.first_attempt_at),
                       first_attempt_at=func.coalesce(T.first_attempt_at, now))
    if row is None:
        return None
    endpoint = session.get(WebhookEndpoint, row.endpoint_id)
    live = endpoint is not None and endpoint.active and endpoint.deleted_at is None
    session.rollback()
    return Claim(id=delivery_id, token=row.attempts, message_id=row.message_id, body=row.body,
                 url=endpoint.url if live else None, secret=endpoint.secret if live else None,
                 first_attempt_at=row.first_attempt_at)


def _change(session: Session, c: Claim, **values: object) -> bool:
    return outbox.fenced(session, TABLE, c.id, c.token, (SENDING,), **values)


def mark_delivered(session: Session, c: Claim, status: int, *, now: datetime) -> bool:
    return _change(session, c, state=DELIVERED, last_status=status, last_error=None, delivered_at=now,
                   next_attempt_at=None, updated_at=now)


def mark_failed(session: Session, c: Claim, reason: str, *, now: datetime) -> bool:
    return _change(session, c, state=FAILED, last_error=reason, next_attempt_at=None, updated_at=now)


def retry_later(session: Session, c: Claim, status: int | None, reason: str, *, now: datetime,
                settings: WebhookSettings) -> str | None:
    """After a failed attempt: ``pending`` again at the schedule's next time, or ``failed`` once the window is over.

    Returns the new state (None if the claim was lost meanwhile).
    """
    when = next_attempt(c.first_attempt_at, now, c.token, settings)
    if when is None:
        reason = f"gave up after {c.token} attempt(s) in {settings.retry_window:g} s; last error: {reason}"
        return FAILED if _change(session, c, state=FAILED, last_status=status, last_error=reason,
                                 next_attempt_at=None, updated_at=now) else None
    return PENDING if _change(session, c, state=PENDING, last_status=status, last_error=reason,
                              next_attempt_at=when, updated_at=now) else None
