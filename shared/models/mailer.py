"""Tables of the mailer: the delivery log (one row per notification)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DateTime,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utcnow


class MailDelivery(Base):
    """Owned by the mailer: one row per notification; ``dedupe_key`` (task id + kind) makes each mail go out once.

    States (see services/mailer/outbox.py): pending -> sending (claimed, SMTP handshake) -> transmitting (DATA
    begun) -> sent | failed | uncertain (the mailer died during DATA: maybe delivered, never resent).
    """

    __tablename__ = "mail_deliveries"
    # The retry timer's query: due rows of the non-terminal states.
    __table_args__ = (Index("ix_mail_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    task_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # pending | sending | transmitting | sent | failed | uncertain
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Migration 0003: what the retry timer and the mail_sent/mail_failed outbox need.
    event_id: Mapped[int | None] = mapped_column(Integer)
    requester_id: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)  # the rendered RFC 5322 message; holds the signed link
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)  # pending: next try; sending: lease end
    announced_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)  # mail event published
