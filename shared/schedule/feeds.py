"""Public schedule feeds: an event's schedule.xml, schedule.json and schedule.ics at stable URLs, cheap to poll.

Public only while the event is published: its ``state`` is ``published`` or ``completed`` (the Open Event states
of a public event; case ignored), its ``privacy`` is not ``private``, and, when its record carries the Open Event
``schedule_published_on`` key, that is set.

Apps poll these feeds with conditional requests, so a feed is rendered at most once per change, not per request:
the rendered bytes are cached per (event, feed), keyed by the event's change stamp (a cheap query: the event row's
state and the count and highest id of each schedule table, so an added or removed session, speaker, room or track
is seen at once). Edits in place do not move that stamp, so a cached entry is also re-rendered after
``RECHECK_SECONDS``; its ETag is the content's hash, so an unchanged re-render still answers 304, and
Last-Modified only moves when the content does. Renders are deterministic (DTSTAMP is the event's creation time).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.archive.records import event_record
from shared.models.events import Event, Microlocation, Speaker, Track
from shared.models.events import Session as Talk
from shared.schedule.snapshot import load_schedule

# feed file extension -> export format identifier
FEEDS = {"xml": "frab-xml", "json": "schedule-json", "ics": "ical"}
PUBLISHED_STATES = frozenset({"published", "completed"})
RECHECK_SECONDS = 60.0
MAX_CACHE_BYTES = 64 * 1024 * 1024  # rendered bytes kept per process (least recently used dropped first)
_STAMP_TABLES = (Talk, Speaker, Microlocation, Track)


class FeedNotFound(LookupError):
    """No such event, or its schedule is not published (both answer 404: nothing about a draft leaks)."""


@dataclass(frozen=True)
class Feed:
    body: bytes
    etag: str  # quoted strong validator
    last_modified: datetime  # aware UTC, whole seconds
    content_type: str


def is_published(event_record: dict[str, Any]) -> bool:
    state = str(event_record.get("state") or "").strip().lower()
    privacy = str(event_record.get("privacy") or "").strip().lower()
    if state not in PUBLISHED_STATES or privacy == "private":
        return False
    return "schedule_published_on" not in event_record or bool(event_record["schedule_published_on"])


def change_stamp(session: Session, event_id: int) -> tuple[Any, ...] | None:
    """What moves when the event's schedule data is added to or removed from; ``None`` for no such event."""
    row = session.execute(sa.select(Event.created_at, Event.state, Event.privacy, Event.timezone, Event.extra_fields)
                          .where(Event.id == event_id)).first()
    if row is None:
        return None
    parts: list[Any] = [str(row.created_at), row.state, row.privacy, row.timezone,
                        hashlib.sha256(repr(row.extra_fields).encode()).hexdigest()]
    for model in _STAMP_TABLES:
        parts += list(session.execute(sa.select(sa.func.count(), sa.func.max(model.id))
                                      .where(model.event_id == event_id)).one())
    return tuple(parts)


@dataclass
class _Entry:
    stamp: tuple[Any, ...]
    checked: float
    feed: Feed


class FeedCache:
    """Rendered feeds by (event, feed), each valid while the change stamp holds and for ``recheck`` seconds."""

    def __init__(self, render: Callable[[Any, str], bytes], content_type: Callable[[str], str],
                 recheck: float = RECHECK_SECONDS, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_CACHE_BYTES) -> None:
        self._render = render  # (schedule, format identifier) -> bytes
        self._content_type = content_type
        self._recheck = recheck
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.renders = 0  # how many times a feed was rendered (the cache's whole point: stays low under polling)

    def get(self, session: Session, event_id: int, feed: str, root_url: str = "") -> Feed:
        """``root_url``: the platform's public address, base of session URLs of an event without a web site."""
        identifier = FEEDS[feed]
        stamp = change_stamp(session, event_id)
        if stamp is None:
            raise FeedNotFound(f"There is no published schedule for event {event_id}.")
        key = (event_id, feed)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.stamp == stamp and now - entry.checked < self._recheck:
                self._entries.move_to_end(key)
                return entry.feed
        feed_value = self._build(session, event_id, identifier, root_url, entry.feed if entry else None)
        with self._lock:
            self._entries[key] = _Entry(stamp, now, feed_value)
            self._entries.move_to_end(key)
            # The newest entry always stays, however large: dropping it would mean a render per request.
            while len(self._entries) > 1 and sum(len(e.feed.body) for e in self._entries.values()) > self._max_bytes:
                self._entries.popitem(last=False)
        return feed_value

    def _build(self, session: Session, event_id: int, identifier: str, root_url: str,
               previous: Feed | None) -> Feed:
        missing = FeedNotFound(f"There is no published schedule for event {event_id}.")
        try:
            if not is_published(event_record(session, event_id)):  # before the expensive read
                raise missing
            created = session.scalar(sa.select(Event.created_at).where(Event.id == event_id))
            generated_at = (created or datetime(1970, 1, 1)).replace(tzinfo=UTC, microsecond=0)
            schedule = load_schedule(session, event_id, root_url=root_url, generated_at=generated_at)
        except LookupError:
            raise missing from None
        body = self._render(schedule, identifier)
        self.renders += 1
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if previous is not None and previous.etag == etag:
            return previous
        return Feed(body, etag, datetime.now(UTC).replace(microsecond=0), self._content_type(identifier))


def not_modified(feed: Feed, if_none_match: str | None, if_modified_since: datetime | None) -> bool:
    """RFC 9110 §13.1: If-None-Match wins when present; else If-Modified-Since."""
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or feed.etag in tags
    if if_modified_since is not None:
        since = if_modified_since if if_modified_since.tzinfo else if_modified_since.replace(tzinfo=UTC)
        return feed.last_modified <= since
    return False
