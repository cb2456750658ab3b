"""Tables of the api_gateway: the tasks view and the login throttle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utcnow


class LoginThrottle(Base):
    """Owned by the gateway: failed logins per account and per client address in the current window, shared by
    every gateway instance. ``key`` is ``<scope>:<sha256 of the subject>`` (scope ``account`` or ``address``)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(DateTime, index=True)


class Task(Base):
    """Owned by the api_gateway: one row per export/import job, updated from status events."""

    __tablename__ = "tasks"
    # Migration 0009: the paged lists (newest first) of a requester's tasks and of an event's exports.
    __table_args__ = (Index("ix_tasks_requester_created", "requested_by", "created_at", "id"),
                      Index("ix_tasks_event_created", "event_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # export | import
    event_id: Mapped[int | None] = mapped_column(Integer, index=True)
    requested_by: Mapped[int] = mapped_column(Integer, index=True)
    requester_email: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="WAITING")  # WAITING | SUCCESS | FAILURE
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | started | progress: only forward
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
