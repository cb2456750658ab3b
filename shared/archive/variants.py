"""Archive variants seen in the wild, how to recognise each, and how its records map to the legacy shape.

- ``legacy``: what the Open Event server wrote from 2016 to May 2017 (the golden files). Records are used exactly as
  parsed: the exporter must give the same files back.
- ``early_2016``: the same files with ``.json`` names, ``custom_forms``, a separate ``social_links`` file,
  ``background_url``, space-separated datetimes and float ``session_types.length``.
- ``dasherized``: the 2017/2018 hand conversions: dasherized keys (``starts-at``, ``logo-url``), datetimes with a
  UTC offset, ``config.json``; some kept underscore keys but carry the offsets.
- ``raw_column``: the server's later export of raw table columns (``starts_at``, ``logo_url``, flat ``track_id``,
  no session-speaker links).

Legacy and raw-column archives were written by a server from a database with primary and foreign keys, so a
duplicated id or a dangling reference there means a damaged or forged file: the reader is strict. The early and
dasherized variants are hand-made and known to be sloppy (ids as strings, empty relation objects, relations to a
file that was left out), so the reader repairs them and says so in warnings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.archive.legacy import format_datetime, nested_session_type_length

VARIANTS = ("legacy", "early_2016", "dasherized", "raw_column")
STRICT_VARIANTS = frozenset({"legacy", "raw_column"})

# Canonical file -> member names it has been seen under, in order of preference.
DATA_FILES: dict[str, tuple[str, ...]] = {
    "event": ("event", "event.json", "events", "events.json"),
    "microlocations": ("microlocations", "microlocations.json"),
    "sessions": ("sessions", "sessions.json"),
    "speakers": ("speakers", "speakers.json"),
    "sponsors": ("sponsors", "sponsors.json"),
    "tracks": ("tracks", "tracks.json"),
    "session_types": ("session_types", "session_types.json"),
    "forms": ("forms", "forms.json", "custom_forms", "custom_forms.json"),
    "social_links": ("social_links", "social_links.json"),
    "meta": ("meta", "meta.json"),
}
# Event keys only the raw-column export has (table columns of the later server).
_RAW_EVENT_KEYS = frozenset(
    {
        "starts_at",
        "ends_at",
        "owner_name",
        "owner_description",
        "original_image_url",
        "logo_url",
        "external_event_url",
        "event_type_id",
        "event_topic_id",
        "event_sub_topic_id",
    }
)

# Event keys of the dasherized variant (the 2017 API names): any one of them marks it. A stray dash in some
# unknown key of a legacy file does not.
_DASHERIZED_EVENT_KEYS = frozenset(
    {
        "starts-at",
        "ends-at",
        "location-name",
        "logo-url",
        "original-image-url",
        "organizer-name",
        "organizer-description",
        "social-links",
        "ticket-url",
        "sub-topic",
        "code-of-conduct",
        "event-copyright",
        "speakers-call",
        "external-event-url",
        "event-url",
        "schedule-published-on",
        "searchable-location-name",
        "is-sessions-speakers-enabled",
        "thumbnail-image-url",
        "large-image-url",
        "placeholder-url",
    }
)

# Renames after "-" -> "_", per file: the later names on the left, the legacy ones on the right.
_COMMON = {"starts_at": "start_time", "ends_at": "end_time"}
RENAMES: dict[str, dict[str, str]] = {
    "event": {
        **_COMMON,
        "original_image_url": "background_image",
        "background_url": "background_image",
        "logo_url": "logo",
        "external_event_url": "event_url",
        "owner_name": "organizer_name",
        "owner_description": "organizer_description",
        "event_copyright": "copyright",
        "speakers_call": "call_for_papers",
        "is_sessions_speakers_enabled": "has_session_speakers",
        "thumbnail_image_url": "thumbnail",
        "large_image_url": "large",
        "icon_image_url": "icon",
    },
    "sessions": {**_COMMON, "slides_url": "slides", "audio_url": "audio", "video_url": "video"},
    "speakers": {
        "photo_url": "photo",
        "is_featured": "featured",
        "thumbnail_image_url": "thumbnail",
        "small_image_url": "small",
        "icon_image_url": "icon",
    },
    "sponsors": {"logo_url": "logo", "type": "sponsor_type"},
    "tracks": {},
    "session_types": {},
    "microlocations": {},
    "forms": {},
    "social_links": {},
    "meta": {},
}
# Nested objects of the event with renames of their own.
_EVENT_NESTED: dict[str, dict[str, str]] = {
    "copyright": {"logo_url": "logo"},
    "call_for_papers": {"starts_at": "start_date", "ends_at": "end_date"},
    "licence_details": {"compact_logo_url": "compact_logo", "logo_url": "logo"},
    "social_links": {},
}

# Relations: record key -> file its ids belong to. Single relations are objects, list relations arrays of objects.
SINGLE_RELATIONS: dict[str, dict[str, str]] = {
    "sessions": {"track": "tracks", "session_type": "session_types", "microlocation": "microlocations"},
}
LIST_RELATIONS: dict[str, dict[str, str]] = {
    "sessions": {"speakers": "speakers"},
    "speakers": {"sessions": "sessions"},
    "tracks": {"sessions": "sessions"},
}
# Flat columns of the raw-column form and the nested relation each one becomes.
FLAT_RELATIONS: dict[str, dict[str, str]] = {
    "sessions": {"track_id": "track", "session_type_id": "session_type", "microlocation_id": "microlocation"},
}

_ID_TEXT = re.compile(r"^\s*[0-9]{1,18}\s*$")
_DATETIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.\d{1,9})?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)

Warn = Callable[..., None]


def _no_warn(*_args: Any, **_kwargs: Any) -> None:
    pass


def detect_variant(
    event: Mapping[str, Any], event_member: str, present: Mapping[str, str], root_names: set[str]
) -> str:
    """Which variant an archive is, from its event record and the names of its members.

    ``present`` maps canonical file names to the member names found; ``root_names`` are the other names at the
    archive's root (after any single top-level folder).
    """
    keys = [k for k in event if isinstance(k, str)]
    if any(k in _DASHERIZED_EVENT_KEYS for k in keys):
        return "dasherized"
    if any(k in _RAW_EVENT_KEYS for k in keys):
        return "raw_column"
    if (
        event_member.endswith(".json")
        or "social_links" in present
        or present.get("forms", "forms").startswith("custom_forms")
    ):
        return "early_2016"
    if "config.json" in root_names or any(_has_offset(event.get(k)) for k in ("start_time", "end_time")):
        return "dasherized"
    return "legacy"


def _has_offset(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    match = _DATETIME_RE.match(value.strip())
    return bool(match and match.group(3))


def zone(name: Any) -> ZoneInfo | None:
    """The IANA zone called ``name``, or None if there is no such zone."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_tables() -> tuple[frozenset[str], dict[str, str]]:
    """(canonical zone names, link name -> target) from the system's tz database: ``zone.tab`` lists the zone of
    every country (so ``Europe/Oslo`` stays canonical even where tzdata made it a link), ``tzdata.zi`` the links
    (``US/Pacific`` -> ``America/Los_Angeles``). Empty when the files are not there: names are then only tidied."""
    for root in TZPATH:
        base = Path(root)
        try:
            tab = (base / "zone.tab").read_text(encoding="utf-8")
            zi = (base / "tzdata.zi").read_text(encoding="utf-8")
        except OSError:
            continue
        canonical = {line.split("\t")[2] for line in tab.splitlines()
                     if line and not line.startswith("#") and line.count("\t") >= 2}
        links = {}
        for line in zi.splitlines():
            if line.startswith("L "):
                parts = line.split()
                if len(parts) == 3:
                    links[parts[2]] = parts[1]
        return frozenset(canonical), links
    return frozenset(), {}


_ZONE_TABLES: tuple[frozenset[str], dict[str, str]] | None = None
_ZONE_NAMES: dict[str, list[str]] | None = None  # casefolded -> available names
_UTC_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])\s*(\d{1,2})(?::?00)?$", re.IGNORECASE)


def canonical_zone(name: Any) -> str | None:
    """The canonical IANA name for a time zone written loosely (``"US / Pacific"``, ``"asia/singapore"``), as a
    deprecated alias (``"US/Pacific"`` -> ``"America/Los_Angeles"``) or as a whole-hour UTC offset (``"UTC+07:00"``
    -> ``"Etc/GMT-7"``); None when the name already is canonical or has no single obvious canonical form (never a
    guess between candidates, never a spelling correction)."""
    global _ZONE_TABLES, _ZONE_NAMES
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        return None
    if _ZONE_TABLES is None:
        _ZONE_TABLES = _zone_tables()
    canonical, links = _ZONE_TABLES
    text = re.sub(r"\s*/\s*", "/", name.strip())
    offset = _UTC_OFFSET.match(text)
    if offset and zone(text) is None:
        hours = int(offset.group(2))
        if hours == 0:
            found = "UTC"
        elif hours <= 12:
            found = f"Etc/GMT{'-' if offset.group(1) == '+' else '+'}{hours}"  # POSIX signs are inverted
        else:
            return None
    else:
        text = re.sub(r"\s+", "_", text)
        if zone(text) is not None:
            found = text
        else:
            if _ZONE_NAMES is None:
                names: dict[str, list[str]] = {}
                for known in available_timezones():
                    names.setdefault(known.casefold(), []).append(known)
                _ZONE_NAMES = names
            matches = _ZONE_NAMES.get(text.casefold(), [])
            if len(matches) != 1:
                return None
            found = matches[0]
    if canonical and found not in canonical and found != "UTC" and not found.startswith("Etc/"):
        target = links.get(found)
        if target is not None and target in canonical:
            found = target
    return found if found != name else None


def _offset(text: str) -> timezone:
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def coerce_id(value: Any) -> Any:
    """``"12"`` -> ``12`` (hand-made files quote ids), ``12.0`` -> ``12`` (or wrote them as floats); anything else
    unchanged."""
    if type(value) is str and _ID_TEXT.match(value):
        return int(value)
    if type(value) is float and value.is_integer() and 0 < value < 2**53:
        return int(value)
    return value


def length_text(value: Any) -> Any:
    """``0.3`` -> ``"00:30"``: 2016 files stored ``session_types.length`` as the float the nested form uses."""
    if type(value) not in (int, float) or value < 0 or value >= 10000:
        return value
    hours = int(value)
    minutes = round((value - hours) * 100)
    if minutes >= 60:
        return value
    text = f"{hours:02d}:{minutes:02d}"
    return text if nested_session_type_length(text) == float(value) else value


_DOTTED_LENGTH = re.compile(r"^\s*\d{1,4}\.\d{1,2}\s*$")


def length_readings(value: Any) -> dict[str, int] | None:
    """The minutes a numeric session length (``0.5``, or the text ``"00.50"``) means read as ``HH.MM`` (the legacy
    server's reading: ``0.3`` is 30 minutes) and read as decimal hours (``0.5`` is 30 minutes); a reading that does
    not fit (``0.75`` as HH.MM) is left out. None for anything else (``"00:30"`` is not ambiguous)."""
    if type(value) in (int, float):
        number = float(value)
    elif type(value) is str and _DOTTED_LENGTH.match(value):
        number = float(value)
    else:
        return None
    if not math.isfinite(number) or number < 0 or number >= 10000:
        return None
    readings: dict[str, int] = {}
    hours = int(number)
    minutes = round((number - hours) * 100)
    if minutes < 60 and abs(hours + minutes / 100 - number) < 1e-9:
        readings["hhmm"] = hours * 60 + minutes
    decimal = number * 60
    if abs(decimal - round(decimal)) < 1e-6:
        readings["decimal"] = round(decimal)
    return readings or None


def minutes_text(minutes: int) -> str:
    """``90`` -> ``"01:30"``: the canonical ``session_types.length``."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def decide_length(value: Any, durations: Mapping[int, int]) -> tuple[str | None, str]:
    """A numeric length as ``"HH:MM"``, disambiguated by ``durations`` (minutes -> how many sessions of the type last
    that long), and how: ``same`` (both readings agree), ``hhmm`` or ``decimal`` (the sessions say so, or only that
    reading fits), ``default`` (neither or both match: HH.MM, the documented reading), ``unreadable`` (None)."""
    readings = length_readings(value)
    if readings is None:
        return None, "unreadable"
    hhmm, decimal = readings.get("hhmm"), readings.get("decimal")
    if hhmm is None:
        return minutes_text(decimal), "decimal"  # type: ignore[arg-type]
    if decimal is None or decimal == hhmm:
        return minutes_text(hhmm), "same"
    by_hhmm, by_decimal = durations.get(hhmm, 0), durations.get(decimal, 0)
    if by_decimal > by_hhmm:
        return minutes_text(decimal), "decimal"
    if by_hhmm > by_decimal:
        return minutes_text(hhmm), "hhmm"
    return minutes_text(hhmm), "default"


class Normalizer:
    """Turns one variant's records into the legacy shape (legacy keys, nested relations, naive local datetimes).

    For ``legacy`` every method returns its argument untouched. Unknown keys are kept (dashes become underscores).
    """

    def __init__(self, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.variant = variant
        self.identity = variant == "legacy"
        self.strict = variant in STRICT_VARIANTS
        self.tz: ZoneInfo | None = None
        self.offset_without_zone = False  # an offset had to be dropped because the event has no known zone
        self.zone_renamed: tuple[str, str] | None = None  # (as written, canonical) when the event's zone was tidied

    # ------------------------------------------------------------------------------------------------- values

    def datetime_text(self, value: str, tz: ZoneInfo | None = None) -> str | None:
        """Naive local ``YYYY-MM-DDTHH:MM:SS`` (in ``tz``, by default the event's zone) for a date-time string, or
        None if it is not one."""
        tz = tz or self.tz
        match = _DATETIME_RE.match(value)
        if match is None:
            return None
        date, time, offset = match.groups()
        try:
            parsed = datetime.fromisoformat(f"{date}T{time}")
        except ValueError:
            return None
        if offset:
            try:
                aware = parsed.replace(tzinfo=_offset(offset))
            except ValueError:
                return None
            if tz is not None:
                try:
                    parsed = aware.astimezone(tz).replace(tzinfo=None)
                except OverflowError:  # beyond year 9999 (or before 1) in that zone: left for the checks to refuse
                    return None
            else:
                self.offset_without_zone = True  # keep the wall time as written
        return format_datetime(parsed)

    def _datetimes(self, obj: dict[str, Any], depth: int = 0) -> None:
        # Any date-time string, at the top level and one level down (call_for_papers, relation snapshots). A nested
        # object with a zone of its own (call_for_papers.timezone) is read in that zone: the legacy files did so.
        # A record's own "timezone" is ignored: legacy sessions say "UTC" over event-local times.
        tz = zone(obj.get("timezone")) if depth else None
        for key, value in obj.items():
            kind = type(value)
            if kind is str:
                if len(value) <= 40 and value[:1].isdigit():
                    text = self.datetime_text(value, tz)
                    if text is not None and text != value:
                        obj[key] = text
            elif depth == 0 and kind is dict:
                self._datetimes(value, 1)
            elif depth == 0 and kind is list:
                for item in value:
                    if type(item) is dict:
                        self._datetimes(item, 1)

    @staticmethod
    def rename(obj: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            name = key.replace("-", "_") if isinstance(key, str) and "-" in key else key
            out[renames.get(name, name)] = value  # a renamed key meeting its legacy twin: the last one wins
        return out

    # -------------------------------------------------------------------------------------------------- files

    def event(self, raw: dict[str, Any]) -> dict[str, Any]:
        if self.identity:
            return raw
        event = self.rename(raw, RENAMES["event"])
        for key, renames in _EVENT_NESTED.items():
            value = event.get(key)
            if isinstance(value, dict):
                event[key] = self.rename(value, renames)
            elif isinstance(value, list):
                event[key] = [self.rename(x, renames) if isinstance(x, dict) else x for x in value]
        if not self.strict:
            if "id" in event:
                event["id"] = coerce_id(event["id"])
            links = event.get("social_links")
            if isinstance(links, list):
                for link in links:
                    if isinstance(link, dict) and "id" in link:
                        link["id"] = coerce_id(link["id"])
        if not self.strict:
            written = event.get("timezone")
            renamed = canonical_zone(written)
            if renamed is not None:
                self.zone_renamed = (written, renamed)
                event["timezone"] = renamed
        self.tz = zone(event.get("timezone"))
        self._datetimes(event)
        return event

    def meta(self, raw: dict[str, Any]) -> dict[str, Any]:
        return raw if self.identity else self.rename(raw, RENAMES["meta"])

    def record(self, file: str, raw: dict[str, Any], warn: Warn = _no_warn) -> dict[str, Any]:
        """A record of an array file in the legacy shape (references are resolved later, by the archive)."""
        if self.identity:
            return raw
        record = self.rename(raw, RENAMES.get(file, {}))
        if not self.strict and "id" in record:
            record["id"] = coerce_id(record["id"])
        record_id = record.get("id")
        for key, target in SINGLE_RELATIONS.get(file, {}).items():
            value = record.get(key)
            if isinstance(value, dict):
                value = self.rename(value, RENAMES[target])
                if not self.strict:
                    if "id" in value:
                        value["id"] = coerce_id(value["id"])
                    if value.get("id") is None:
                        warn("empty_relation", f"{key} has no id; treated as no {key}", record_id=record_id, field=key)
                        value = None
                record[key] = value
        for key, target in LIST_RELATIONS.get(file, {}).items():
            items = record.get(key)
            if isinstance(items, list):
                kept = []
                for item in items:
                    if isinstance(item, dict):
                        item = self.rename(item, RENAMES[target])
                        if not self.strict:
                            if "id" in item:
                                item["id"] = coerce_id(item["id"])
                            if item.get("id") is None:
                                warn("empty_relation", f"an entry of {key} has no id; dropped",
                                     record_id=record_id, field=key)
                                continue
                    kept.append(item)
                record[key] = kept
        if file == "session_types" and "length" in record and self.strict:
            # Hand-made variants: the archive reads numeric lengths with the sessions' durations (decide_length).
            record["length"] = length_text(record["length"])
        self._datetimes(record)
        return record
