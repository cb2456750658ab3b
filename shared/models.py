"""The platform data model: users, event roles and the event data that archives carry.

Datetimes of event data are naive event-local wall time (the zone is ``Event.timezone``), exactly as archives carry
them, so a round trip never shifts a time across a DST fold.

Lossless archives: every archived record has three bookkeeping columns.
- ``extra_fields``: keys the model has no column for, and keys whose archived value differs from what the columns
  and relations would produce (a stale nested speaker name, a float where a string is expected), kept verbatim.
- ``absent_fields``: keys the model would produce but the source record did not carry.
- ``archive_order``: position of the record in its source file (files are not always sorted by id).
Records created on the platform leave all three empty and export with the standard field set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.secretbox import EncryptedText, SecretsJSON


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ArchivedRecord:
    """Columns that make a record reproduce its source archive exactly (see module docstring)."""

    extra_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    absent_fields: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    archive_order: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    __tablename__ = "users"
    # Ids are never reused (SQLite would otherwise hand a deleted user's id to the next one, and its tokens with it).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LoginThrottle(Base):
    """Owned by the gateway: failed logins per account and per client address in the current window, shared by
    every gateway instance. ``key`` is ``<scope>:<sha256 of the subject>`` (scope ``account`` or ``address``)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(DateTime, index=True)


ROLE_ORGANIZER = "organizer"
ROLE_COORGANIZER = "coorganizer"
EVENT_ROLES = (ROLE_ORGANIZER, ROLE_COORGANIZER)


class EventRole(Base):
    __tablename__ = "event_roles"
    __table_args__ = (UniqueConstraint("user_id", "event_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))


class Event(ArchivedRecord, Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    location_name: Mapped[str | None] = mapped_column(Text)
    start_time: Mapped[datetime | None] = mapped_column(DateTime)
    end_time: Mapped[datetime | None] = mapped_column(DateTime)
    timezone: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    background_image: Mapped[str | None] = mapped_column(Text)
    logo: Mapped[str | None] = mapped_column(Text)
    organizer_name: Mapped[str | None] = mapped_column(Text)
    organizer_description: Mapped[str | None] = mapped_column(Text)
    event_url: Mapped[str | None] = mapped_column(Text)
    ticket_url: Mapped[str | None] = mapped_column(Text)
    privacy: Mapped[str | None] = mapped_column(String(32))
    type: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(Text)
    sub_topic: Mapped[str | None] = mapped_column(Text)
    code_of_conduct: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    copyright: Mapped[EventCopyright | None] = relationship(back_populates="event", uselist=False)
    social_links: Mapped[list[SocialLink]] = relationship(back_populates="event")


class EventCopyright(ArchivedRecord, Base):
    __tablename__ = "event_copyrights"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), unique=True)
    holder: Mapped[str | None] = mapped_column(Text)
    holder_url: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(Text)
    licence_url: Mapped[str | None] = mapped_column(Text)
    logo: Mapped[str | None] = mapped_column(Text)
    year: Mapped[int | None] = mapped_column(Integer)

    event: Mapped[Event] = relationship(back_populates="copyright")


class SocialLink(ArchivedRecord, Base):
    __tablename__ = "social_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)

    event: Mapped[Event] = relationship(back_populates="social_links")


class Microlocation(ArchivedRecord, Base):
    __tablename__ = "microlocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    floor: Mapped[int | None] = mapped_column(Integer)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    room: Mapped[str | None] = mapped_column(Text)


class Track(ArchivedRecord, Base):
    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    color: Mapped[str | None] = mapped_column(String(32))
    font_color: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    track_image_url: Mapped[str | None] = mapped_column(Text)


class SessionType(ArchivedRecord, Base):
    __tablename__ = "session_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    length: Mapped[str | None] = mapped_column(String(16))  # "HH:MM"


class SessionSpeaker(Base):
    """Session-speaker link; ``position`` keeps the order speakers are listed in on the session."""

    __tablename__ = "session_speakers"

    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    speaker_id: Mapped[int] = mapped_column(
        ForeignKey("speakers.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class Session(ArchivedRecord, Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(Text)
    subtitle: Mapped[str | None] = mapped_column(Text)
    short_abstract: Mapped[str | None] = mapped_column(Text)
    long_abstract: Mapped[str | None] = mapped_column(Text)
    start_time: Mapped[datetime | None] = mapped_column(DateTime)
    end_time: Mapped[datetime | None] = mapped_column(DateTime)
    session_type_id: Mapped[int | None] = mapped_column(ForeignKey("session_types.id", ondelete="SET NULL"))
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"), index=True)
    microlocation_id: Mapped[int | None] = mapped_column(ForeignKey("microlocations.id", ondelete="SET NULL"))
    comments: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(Text)
    slides: Mapped[str | None] = mapped_column(Text)
    audio: Mapped[str | None] = mapped_column(Text)
    video: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str | None] = mapped_column(Text)
    signup_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(String(32))


class Speaker(ArchivedRecord, Base):
    __tablename__ = "speakers"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    mobile: Mapped[str | None] = mapped_column(Text)
    photo: Mapped[str | None] = mapped_column(Text)
    organisation: Mapped[str | None] = mapped_column(Text)
    position: Mapped[str | None] = mapped_column(Text)  # job title, as the format names it
    country: Mapped[str | None] = mapped_column(Text)
    short_biography: Mapped[str | None] = mapped_column(Text)
    long_biography: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    twitter: Mapped[str | None] = mapped_column(Text)
    facebook: Mapped[str | None] = mapped_column(Text)
    github: Mapped[str | None] = mapped_column(Text)
    linkedin: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    gender: Mapped[str | None] = mapped_column(Text)


class Sponsor(ArchivedRecord, Base):
    __tablename__ = "sponsors"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    logo: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str | None] = mapped_column(Text)
    sponsor_type: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)


class CustomForm(ArchivedRecord, Base):
    """Session and speaker form settings; both are JSON documents kept as the strings the format carries."""

    __tablename__ = "custom_forms"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    session_form: Mapped[str | None] = mapped_column(Text)
    speaker_form: Mapped[str | None] = mapped_column(Text)


class DiscountCode(Base):
    """Discount codes belong to the platform, not to the archive format (the legacy export never carried them)."""

    __tablename__ = "discount_codes"
    __table_args__ = (UniqueConstraint("event_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float, default=0)
    type: Mapped[str] = mapped_column(String(16), default="amount")  # amount | percent
    tickets_number: Mapped[int | None] = mapped_column(Integer)
    min_quantity: Mapped[int] = mapped_column(Integer, default=1)
    max_quantity: Mapped[int | None] = mapped_column(Integer)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime)
    valid_till: Mapped[datetime | None] = mapped_column(DateTime)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    used_for: Mapped[str] = mapped_column(String(16), default="ticket")


class Task(Base):
    """Owned by the api_gateway: one row per export/import job, updated from status events."""

    __tablename__ = "tasks"

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


class JobLease(Base):
    """Owned by the exporter and importer (shared/jobs/lease.py): which run of a task is working on it now.

    A run takes the lease before the work, renews it while working and checks it before writing; a redelivered
    request finds it held and waits, or takes it over once it expired (the holder died). ``deliveries`` counts the
    runs that took it: past ``JOB_MAX_DELIVERIES`` the task ends FAILURE (a poison message).
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


class StorageBackendRecord(Base):
    """Owned by storage: a place exports can go to (besides the configured default), managed by admins.

    ``token`` and the secret-looking keys of ``config`` are write-only: the API never returns them. Records are never
    deleted, only deactivated (``active``): objects stored in them stay readable and keep expiring.
    """

    __tablename__ = "storage_backends"

    id: Mapped[int] = mapped_column(primary_key=True)
    storage_backend: Mapped[str] = mapped_column(String(16))  # local | s3 | gcs | dropbox | seafile
    storage_backend_id: Mapped[str] = mapped_column(String(64), unique=True)  # the identifier clients name
    # Encrypted at rest (shared/secretbox.py): the token whole, the config's secret-named values one by one.
    token: Mapped[str | None] = mapped_column(EncryptedText)
    config: Mapped[dict[str, Any]] = mapped_column(SecretsJSON, default=dict)
    keep_days: Mapped[int] = mapped_column(Integer, default=0)  # 0: objects are kept
    description: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StorageObject(Base):
    """Owned by storage: which backend each object lives in, and when it expires (the retention sweeper's queue).

    ``backend`` is a ``storage_backend_id`` or ``default`` (the backend configured by environment). A deleted object
    keeps its row (``deleted_at``, ``deleted_reason``) so that links to it can say why it is gone. ``claim`` and
    ``claimed_until`` let several sweepers share the work; ``announce`` is the storage event still to be published
    for this row (an outbox of one).
    """

    __tablename__ = "storage_objects"
    __table_args__ = (Index("ix_storage_objects_due", "deleted_at", "expires_at"),
                      Index("ix_storage_objects_owner", "owner_id", "deleted_at"))

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    backend: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted_reason: Mapped[str | None] = mapped_column(String(16))  # expired | deleted
    claim: Mapped[str | None] = mapped_column(String(36))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    announce: Mapped[str | None] = mapped_column(String(32), index=True)  # object_stored | object_expired
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The user whose quota the object counts against (uploads and import archives); None for everything else.
    owner_id: Mapped[int | None] = mapped_column(Integer)
