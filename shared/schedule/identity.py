"""Stable identifiers of schedule records: GUIDs and slugs.

A GUID is the record's own ``x-schedule.guid`` when it has one (imported schedules keep their source's), otherwise a
UUID5 of the event (its ``identifier``, else its id) and the record's kind and id: the same on every export and after
edits, since neither the event key nor record ids change.

Keys of the ``x-schedule`` dict carried by event, session, speaker, microlocation and track records (both the export
and the import side use these names):

- ``guid``: str UUID of the record in its schedule.
- ``slug``: the record's slug in the source (sessions: C3VOC ``voc-slug-new``; tracks: ``slug``).
- ``links``: list of ``{"url", "title"}``; ``attachments``: list of ``{"url", "title"}``.
- ``recording``: ``{"license": str, "optout": bool}``; ``do_not_record``: bool.
- ``subtitle``, ``language``, ``feedback_url``, ``answers``: as the source holds them.
- ``source_format``: identifier of the format the record came from; ``source_id``: its id in the source file.
- ``day_change`` (event): ``"HH:MM"``, the local time at which one conference day turns into the next.
- ``acronym`` (event): the conference acronym (C3VOC ``acronym`` pattern).
- ``extra``: dict keyed by format identifier, for anything format specific.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

# Fixed namespace of derived GUIDs: changing it would change every derived GUID.
GUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:open-event-portability:schedule")

KINDS = ("event", "session", "speaker", "microlocation", "track", "session_type")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_ACRONYM_RE = re.compile(r"^[a-z0-9_-]{4,}$")
_SESSION_SLUG_RE = re.compile(r"^[a-z0-9_]{4,}-[a-z0-9\-_]{4,}$")
_TRACK_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]+$")


def x_schedule(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's ``x-schedule`` dict (empty when absent or not a dict)."""
    value = (record or {}).get("x-schedule")
    return value if isinstance(value, dict) else {}


def is_guid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def event_key(event_record: Mapping[str, Any]) -> str:
    """What derived GUIDs hang on: the event's public identifier, else its id."""
    identifier = event_record.get("identifier")
    if isinstance(identifier, str) and identifier.strip():
        return identifier.strip()
    return str(event_record.get("id"))


def derived_guid(event_record: Mapping[str, Any], kind: str, record_id: Any) -> str:
    return str(uuid.uuid5(GUID_NAMESPACE, f"{event_key(event_record)}/{kind}/{record_id}"))


def record_guid(event_record: Mapping[str, Any], kind: str, record: Mapping[str, Any]) -> str:
    """The record's GUID: its ``x-schedule.guid`` if valid, else derived from the event and ``kind`` + record id."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(KINDS)}")
    own = x_schedule(record).get("guid")
    if is_guid(own):
        return own.lower()
    return derived_guid(event_record, kind, record.get("id"))


def event_guid(event_record: Mapping[str, Any]) -> str:
    return record_guid(event_record, "event", event_record)


def slugify(text: Any, *, separator: str = "_") -> str:
    """Lowercase ASCII letters and digits joined by ``separator`` (accents folded, everything else dropped)."""
    folded = unicodedata.normalize("NFKD", str(text or "")).encode("ascii", "ignore").decode("ascii").lower()
    return separator.join(re.findall(r"[a-z0-9]+", folded))


def _pad(value: str, length: int, fill: str) -> str:
    return value + fill * (length - len(value)) if len(value) < length else value


def acronym(event_record: Mapping[str, Any]) -> str:
    """The conference acronym, matching the C3VOC ``acronym`` pattern ``[a-z0-9_-]{4,}``."""
    own = x_schedule(event_record).get("acronym")
    if isinstance(own, str) and _ACRONYM_RE.match(own):
        return own
    base = slugify(event_record.get("identifier"), separator="-") or slugify(event_record.get("name"), separator="-")
    return _pad((base or f"event-{event_record.get('id')}")[:40].strip("-"), 4, "_")


def session_slug(event_record: Mapping[str, Any], session: Mapping[str, Any]) -> str:
    """The session's slug (C3VOC ``voc-slug-new``: ``[a-z0-9_]{4,}-[a-z0-9\\-_]{4,}``), unique by the session id.

    A valid imported slug is kept; otherwise ``<acronym>-<id>-<title>``, frab's shape."""
    own = x_schedule(session).get("slug")
    if isinstance(own, str) and _SESSION_SLUG_RE.match(own):
        return own
    prefix = _pad(acronym(event_record).replace("-", "_"), 4, "_")
    title = slugify(session.get("title"))[:60].strip("_")
    rest = f"{session.get('id')}-{title}".rstrip("-")
    return f"{prefix}-{_pad(rest, 4, '_')}"


def track_slug(track: Mapping[str, Any]) -> str:
    """A track's slug matching the XSD ``slug`` pattern ``[a-z][a-z0-9-]+``."""
    own = x_schedule(track).get("slug")
    if isinstance(own, str) and _TRACK_SLUG_RE.match(own):
        return own
    base = slugify(track.get("name"), separator="-")[:60].strip("-")
    if not base or not base[0].isalpha():
        base = f"track-{base}" if base else f"track-{track.get('id')}"
    return base


__all__ = ["GUID_NAMESPACE", "KINDS", "acronym", "derived_guid", "event_guid", "event_key", "is_guid",
           "record_guid", "session_slug", "slugify", "track_slug", "x_schedule"]
