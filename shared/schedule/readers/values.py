"""Dates, times and durations as schedule files spell them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from shared.archive.variants import canonical_zone, zone
from shared.schedule.readers.windows_zones import WINDOWS_ZONES, iana_for_windows

_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_DURATION = re.compile(r"^\s*(\d{1,4}):(\d{2})(?::(\d{2}))?\s*$")


def parse_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def parse_datetime(text: str | None) -> datetime | None:
    """ISO 8601 date-time, with offset or ``Z`` (aware) or without (naive); None when unparsable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def parse_clock(text: str | None) -> time | None:
    match = _CLOCK.match(text or "")
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    return time(hours, minutes, seconds)


def duration_minutes(text: str | None) -> int | None:
    """``HH:MM`` or ``HH:MM:SS`` (the XSD's two forms; pentabarf wrote seconds) -> minutes; hours may pass 24."""
    if not text:
        return None
    match = _DURATION.match(text)
    if match is None:
        return None
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if minutes > 59 or seconds > 59:
        return None
    return hours * 60 + minutes + (1 if seconds >= 30 else 0)


def zone_name(text: str | None) -> str | None:
    """The IANA name for a zone as a file spells it (canonical, loose, alias or whole-hour offset), else None."""
    if not text:
        return None
    if zone(text.strip()) is not None:
        return text.strip()
    return canonical_zone(text) or iana_for_windows(text)


def zone_info(text: str | None) -> ZoneInfo | None:
    name = zone_name(text)
    return ZoneInfo(name) if name else None


def zone_for_offsets(pairs: Iterable[tuple[datetime, timedelta]]) -> str | None:
    """The tz database zone that gives each UTC instant its offset (a file's times carry offsets but no zone name,
    or a calendar defines its own zone): a zone Windows names first (in the Windows table's order, which lists the
    main zone of an offset first), then the first by name; None when none fits."""
    seen: dict[tuple[date, timedelta], datetime] = {}  # one instant per date and offset is enough to tell zones
    for moment, offset in pairs:
        seen.setdefault((moment.astimezone(UTC).date(), offset), moment.astimezone(UTC))
    checks = [(moment, offset) for (_day, offset), moment in seen.items()]
    if not checks:
        return None
    matches = [name for name in _candidate_zones()
               if all(moment.astimezone(ZoneInfo(name)).utcoffset() == offset for moment, offset in checks)]
    preferred = sorted((name for name in matches if name in _WINDOWS_ORDER), key=_WINDOWS_ORDER.__getitem__)
    return (preferred or matches or [None])[0]


_WINDOWS_ORDER = {name: i for i, name in enumerate(dict.fromkeys(WINDOWS_ZONES.values()))}


@cache
def _candidate_zones() -> list[str]:
    return sorted(name for name in available_timezones() if "/" in name and not name.startswith(
        ("Etc/", "SystemV/", "posix/", "right/", "US/", "Canada/", "Mexico/", "Brazil/", "Chile/")))
