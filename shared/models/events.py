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

from datetime import datetime

from sqlalchemy import (
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
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.models.base import ArchivedRecord, Base, utcnow


class User(Base):
    __tablename__ = "users"
    # Ids are never reused (SQLite would otherwise hand a deleted user's id to the next one, and its tokens with it).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


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


class EventRecord(ArchivedRecord):
    """An archived record of one event: its own id and its event's (the record goes when the event goes)."""

    # sort_order: first in the table, as in the migrations.
    id: Mapped[int] = mapped_column(primary_key=True, sort_order=-2)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True, sort_order=-1)


class Event(ArchivedRecord, Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_created", "created_at", "id"),)  # GET /v1/events pages (migration 0009)

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


class SocialLink(EventRecord, Base):
    __tablename__ = "social_links"

    name: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)

    event: Mapped[Event] = relationship(back_populates="social_links")


class Microlocation(EventRecord, Base):
    __tablename__ = "microlocations"

    name: Mapped[str | None] = mapped_column(Text)
    floor: Mapped[int | None] = mapped_column(Integer)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    room: Mapped[str | None] = mapped_column(Text)


class Track(EventRecord, Base):
    __tablename__ = "tracks"

    name: Mapped[str | None] = mapped_column(Text)
    color: Mapped[str | None] = mapped_column(String(32))
    font_color: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    track_image_url: Mapped[str | None] = mapped_column(Text)


class SessionType(EventRecord, Base):
    __tablename__ = "session_types"

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


class Session(EventRecord, Base):
    __tablename__ = "sessions"

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


class Speaker(EventRecord, Base):
    __tablename__ = "speakers"

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


class Sponsor(EventRecord, Base):
    __tablename__ = "sponsors"

    name: Mapped[str | None] = mapped_column(Text)
    logo: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str | None] = mapped_column(Text)
    sponsor_type: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)


class CustomForm(EventRecord, Base):
    """Session and speaker form settings; both are JSON documents kept as the strings the format carries."""

    __tablename__ = "custom_forms"

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
