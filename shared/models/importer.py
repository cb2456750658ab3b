"""Tables of the importer: which event each import task created."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utcnow


class ImportedEvent(Base):
    """Owned by the importer: which event an import task created, written in the same transaction as the event.

    The primary key makes a redelivered import request find its event instead of creating a second one.
    """

    __tablename__ = "imported_events"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(32))
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    warnings: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
