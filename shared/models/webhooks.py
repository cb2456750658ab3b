"""Tables of the webhooks service: registered endpoints and the delivery log (one row per event and endpoint)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import flag_modified

from shared.models.base import Base, utcnow
from shared.secretbox import EncryptedText


class WebhookEndpoint(Base):
    """Owned by the webhooks service: where to POST which events. ``secret`` is encrypted at rest and shown once.

    ``event_id`` null: every event's jobs (admins only). Deleting sets ``deleted_at`` (the delivery log stays).
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)  # API names: export.completed, ...
    event_id: Mapped[int | None] = mapped_column(Integer, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(EncryptedText)  # whsec_<base64>
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)


class WebhookDelivery(Base):
    """Owned by the webhooks service: one row per (event, endpoint), enforced by the unique ``dedupe_key``.

    ``message_id`` is the ``webhook-id`` header, the same on every attempt. States (services/webhooks/outbox.py):
    pending -> sending (claimed, request under way; the lease is ``next_attempt_at``) -> delivered | failed, or
    back to pending with the next retry time.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str] = mapped_column(String(600), unique=True)  # "<endpoint>:<event type>:<what it is about>"
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))  # API name
    body: Mapped[str] = mapped_column(Text)  # the exact JSON bytes signed and sent on every attempt
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def reseal_secrets(session: Session) -> int:
    """Re-encrypt every endpoint's secret with the newest key of ``SECRETS_ENCRYPTION_KEYS`` (rows under a key being
    rotated out); ``SecretsKeyError`` if a row fits none. The webhooks service runs it at start-up,
    ``tools/cli.py reseal-secrets`` on request."""
    endpoints = list(session.scalars(select(WebhookEndpoint)))
    for endpoint in endpoints:  # loading decrypted them; marking them rewrites them with the current first key
        flag_modified(endpoint, "secret")
    session.commit()
    return len(endpoints)
