"""Validation rules for normalized (legacy-shaped) records: required fields, types, ids, relations.

Only what the importer relies on is enforced: ids, required names and titles, date-times, media values and the
shape of relations. Every other key may hold anything: the loader keeps it verbatim for the round trip.

Error codes: ``missing_field``, ``wrong_type``, ``invalid_id``, ``invalid_datetime``, ``unknown_reference``.
Warning codes: ``dangling_reference``, ``id_out_of_range``, ``unknown_timezone``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.archive.legacy import media_fields
from shared.archive.safezip import ArchiveError
from shared.archive.variants import FLAT_RELATIONS, LIST_RELATIONS, SINGLE_RELATIONS, zone

INT32_MAX = 2**31 - 1
REQUIRED_TEXT: dict[str, tuple[str, ...]] = {"event": ("name",), "sessions": ("title",), "speakers": ("name",)}
DATETIMES: dict[str, tuple[str, ...]] = {"event": ("start_time", "end_time"), "sessions": ("start_time", "end_time")}
# Back references (a speaker's or a track's sessions) are derived data the importer recomputes from the sessions:
# a dangling entry is only worth a warning.
BACK_REFERENCES = {("speakers", "sessions"), ("tracks", "sessions")}
SINGULAR = {
    "tracks": "track",
    "session_types": "session type",
    "microlocations": "microlocation",
    "speakers": "speaker",
    "sessions": "session",
}

Warn = Callable[..., None]


class Known(Protocol):
    def known(self, file: str, record_id: int) -> bool: ...


def valid_id(value: Any) -> int | None:
    """A usable record id: an integer (not a bool) that fits a database key."""
    if type(value) is int and 1 <= value <= INT32_MAX:
        return value
    return None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def record_label(record: Mapping[str, Any]) -> Any:
    """The record's id as it can appear in a message (None when it has no printable id)."""
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value if len(str(value)) <= 64 else None


def datetime_problem(value: str) -> str | None:
    """Why ``value`` is not a usable date-time (``None`` if it is one): not ISO 8601, or an instant outside the
    years 1 to 9999 once its offset is applied (``9999-12-31T23:59:59-14:00``), which no database or zone
    conversion can hold."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return "is not a date-time"
    if parsed.tzinfo is not None:
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            return "is outside the years 1 to 9999 in UTC"
    return None


def is_datetime(value: str) -> bool:
    return datetime_problem(value) is None


def _error(
    code: str, detail: str, file: str, record: Mapping[str, Any], field: str | None, position: int | None
) -> ArchiveError:
    return ArchiveError(code, detail, file=file, record_id=record_label(record), field=field, position=position)


def check_id(file: str, record: Mapping[str, Any], position: int | None) -> int:
    if "id" not in record or record["id"] is None:
        raise _error("missing_field", "id is missing", file, record, "id", position)
    value = record["id"]
    if type(value) is not int:
        raise _error("wrong_type", f"id must be a positive integer, not {type_name(value)}", file, record, "id",
                     position)
    if valid_id(value) is None:
        raise _error("invalid_id", f"id {value} is out of range (1 to {INT32_MAX})", file, record, "id", position)
    return value


def _check_common(file: str, record: Mapping[str, Any], position: int | None) -> None:
    for key in REQUIRED_TEXT.get(file, ()):
        value = record.get(key)
        if value is None:
            raise _error("missing_field", f"{key} is missing", file, record, key, position)
        if not isinstance(value, str):
            raise _error("wrong_type", f"{key} must be a string, not {type_name(value)}", file, record, key, position)
        if file == "event" and not value.strip():
            raise _error("missing_field", f"{key} is empty", file, record, key, position)
    for key in DATETIMES.get(file, ()):
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _error("wrong_type", f"{key} must be a date-time string, not {type_name(value)}", file, record,
                         key, position)
        problem = datetime_problem(value)
        if problem is not None:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise _error("invalid_datetime", f"{key} {problem}: {shown!r}", file, record, key, position)
    for media in media_fields(file):
        value = record.get(media.field)
        if value is not None and not isinstance(value, str):
            raise _error("wrong_type", f"{media.field} must be a string or null, not {type_name(value)}", file,
                         record, media.field, position)


def check_event(event: Mapping[str, Any], warn: Warn) -> None:
    """Errors are raised; oddities the importer can live with are passed to ``warn``."""
    _check_common("event", event, None)
    if event.get("id") is not None:
        value = event["id"]
        if type(value) is not int or value < 1:
            raise _error("wrong_type", f"id must be a positive integer, not {type_name(value)}", "event", event,
                         "id", None)
        if value > INT32_MAX:
            warn("id_out_of_range", f"event id {value} cannot be kept; the event gets a new id",
                 file="event", record_id=value, field="id")
    tz = event.get("timezone")
    if tz is not None:
        if not isinstance(tz, str):
            raise _error("wrong_type", f"timezone must be a string, not {type_name(tz)}", "event", event,
                         "timezone", None)
        if zone(tz) is None:
            warn("unknown_timezone", f"timezone {tz[:64]!r} is not a known time zone", file="event",
                 record_id=record_label(event), field="timezone")
    copyright_ = event.get("copyright")
    if copyright_ is not None and not isinstance(copyright_, dict):
        raise _error("wrong_type", f"copyright must be an object or null, not {type_name(copyright_)}", "event",
                     event, "copyright", None)
    links = event.get("social_links")
    if links is None:
        return
    if not isinstance(links, list):
        raise _error("wrong_type", f"social_links must be an array, not {type_name(links)}", "event", event,
                     "social_links", None)
    for link in links:
        if not isinstance(link, dict):
            raise _error("wrong_type", f"social_links holds {type_name(link)}, not an object", "event", event,
                         "social_links", None)
        if link.get("id") is not None and valid_id(link["id"]) is None:
            raise _error("wrong_type", f"a social link has an invalid id ({type_name(link['id'])})", "event",
                         event, "social_links", None)


def check_record(file: str, record: Any, position: int | None, ctx: Known, warn: Warn) -> None:
    """One record of an array file, already normalized and with its references resolved."""
    if not isinstance(record, dict):
        raise ArchiveError("wrong_type", f"expected a JSON object, found {type_name(record)}", file=file,
                           position=position)
    check_id(file, record, position)
    _check_common(file, record, position)
    if file == "session_types":
        length = record.get("length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, (str, int, float))):
            raise _error("wrong_type", f"length must be a string, not {type_name(length)}", file, record, "length",
                         position)
    for column in FLAT_RELATIONS.get(file, {}):
        if column in record:  # left flat by the reader: not a usable id
            raise _error("wrong_type", f"{column} must be an integer id or null, not {type_name(record[column])}",
                         file, record, column, position)
    for key, target in SINGLE_RELATIONS.get(file, {}).items():
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _error("wrong_type", f"{key} must be an object or null, not {type_name(value)}", file, record, key,
                         position)
        ref = valid_id(value.get("id"))
        if ref is None:
            raise _error("wrong_type", f"{key} has no valid id ({type_name(value.get('id'))})", file, record, key,
                         position)
        if not ctx.known(target, ref):
            raise _error("unknown_reference", f"{SINGULAR[target]} {ref} does not exist", file, record, key,
                         position)
    for key, target in LIST_RELATIONS.get(file, {}).items():
        items = record.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise _error("wrong_type", f"{key} must be an array, not {type_name(items)}", file, record, key, position)
        back = (file, key) in BACK_REFERENCES
        for item in items:
            if not isinstance(item, dict):
                raise _error("wrong_type", f"{key} holds {type_name(item)}, not an object", file, record, key,
                             position)
            value = item.get("id")
            if type(value) is not int:
                raise _error("wrong_type", f"an entry of {key} has no valid id ({type_name(value)})", file, record,
                             key, position)
            ref = valid_id(value)
            if ref is not None and ctx.known(target, ref):
                continue
            if back:
                warn("dangling_reference", f"{key} lists {SINGULAR[target]} {value}, which does not exist",
                     file=file, record_id=record_label(record), field=key)
                continue
            raise _error("unknown_reference", f"{SINGULAR[target]} {value} does not exist", file, record, key,
                         position)


def check_fields(file: str, record: Any, position: int | None) -> None:
    """The checks of ``check_record`` that need nothing but the record itself (id, names, date-times, media, length
    type): what the reader can judge while indexing, before any reference is known."""
    if not isinstance(record, dict):
        raise ArchiveError("wrong_type", f"expected a JSON object, found {type_name(record)}", file=file,
                           position=position)
    check_id(file, record, position)
    _check_common(file, record, position)
