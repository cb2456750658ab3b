"""Tables of the job lifecycle (``shared/jobs``), used by exporter and importer: the lease of each task."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, utcnow


class JobLease(Base):
    """Owned by the exporter and importer (shared/jobs/lease.py): which run of a task is working on it now.

    A run takes the lease before the work, renews it while working and checks it before writing; a redelivered
    request finds it held and waits, or takes it over once it expired (the holder died). ``deliveries`` counts the
    runs that took it: past ``JOB_MAX_DELIVERIES`` the task ends FAILURE (a poison message). ``outcome`` is the
    outcome event a run reached (``{"type", "payload"}``), saved under the lease before it is published: a run that
    takes over from one that died before finishing publishes that same event again instead of working again.
    """

    __tablename__ = "job_leases"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # export | import
    owner: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # running | done
    deliveries: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
