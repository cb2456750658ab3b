"""What every model module shares: the declarative ``Base`` (one metadata for Alembic) and ``utcnow``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Integer,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ArchivedRecord:
    """Columns that make a record reproduce its source archive exactly (see module docstring)."""

    extra_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    absent_fields: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    archive_order: Mapped[int | None] = mapped_column(Integer, nullable=True)
