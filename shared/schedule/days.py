"""Conference days, times and durations as schedule formats write them.

Session times are naive wall time in the event's zone (``Event.timezone``). A conference day runs from its day change
(default 04:00, as frab does) to the next day's: a talk at 01:00 belongs to the previous evening's day, and days are
local dates, never UTC dates. Every time written out carries the event's UTC offset at that instant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.schedule.identity import x_schedule

DEFAULT_DAY_CHANGE = time(4, 0)
MAX_DURATION_MINUTES = 99 * 60 + 59  # the C3VOC duration pattern allows two hour digits

_HHMM_RE = re.compile(r"^\s*(\d{1,2}):([0-5]\d)(?::([0-5]?\d))?\s*$")


class BadTime(ValueError):
    """A time, duration or day change that cannot be read."""


# ------------------------------------------------------------------------------------------------------ zones


def zone(name: str | None) -> tzinfo:
    """The tz database zone ``name``; UTC when it is empty or unknown (old archives hold free text there)."""
    if name and isinstance(name, str):
        try:
            return ZoneInfo(name.strip())
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    return UTC


def zone_name(tz: tzinfo) -> str:
    """The IANA name of ``tz`` (``"UTC"`` for the fixed UTC zone)."""
    return getattr(tz, "key", None) or "UTC"


def event_zone(event_record: Mapping[str, Any]) -> tzinfo:
    return zone(event_record.get("timezone"))


def parse_wall(value: Any) -> datetime | None:
    """A record's naive ``YYYY-MM-DDTHH:MM:SS`` (offset, if any, dropped: records hold wall time) or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    try:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=None)


def localize(wall: datetime, tz: tzinfo) -> datetime:
    """Wall time in ``tz`` as an aware datetime (the first of two at a DST fold, like the tz database's default)."""
    return wall.replace(tzinfo=tz, fold=0)


def iso_local(moment: datetime) -> str:
    """``2015-08-07T16:00:00+02:00``: seconds precision with the offset (``+00:00`` for UTC, never ``Z``)."""
    return moment.isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- durations


def format_duration(minutes: int | float | timedelta | None) -> str:
    """``HH:MM`` (clamped to 00:00..99:59, as the C3VOC pattern allows two hour digits)."""
    if minutes is None:
        minutes = 0
    if isinstance(minutes, timedelta):
        minutes = minutes.total_seconds() / 60
    total = max(0, min(MAX_DURATION_MINUTES, int(round(minutes))))
    return f"{total // 60:02d}:{total % 60:02d}"


def parse_duration(text: str) -> int:
    """Minutes of ``HH:MM`` or ``HH:MM:SS`` (seconds rounded away: schedules count minutes)."""
    match = _HHMM_RE.match(text or "")
    if not match:
        raise BadTime(f"duration {text!r} is not HH:MM or HH:MM:SS")
    hours, mins, secs = int(match[1]), int(match[2]), int(match[3] or 0)
    return hours * 60 + mins + (1 if secs >= 30 else 0)


def minutes_between(start: datetime | None, end: datetime | None) -> int:
    """Whole minutes elapsed from ``start`` to ``end`` (0 when either is missing or ``end`` is earlier). Elapsed,
    not wall-clock: aware times of one zone subtract as wall times, an hour off across a DST change, and apps add
    the duration to the start as elapsed time."""
    if start is None or end is None or end <= start:
        return 0
    elapsed = end.astimezone(UTC) - start.astimezone(UTC) if start.tzinfo and end.tzinfo else end - start
    return max(int(elapsed.total_seconds() // 60), 0)


# ----------------------------------------------------------------------------------------------- day change


def parse_day_change(value: Any) -> time:
    """``"HH:MM"`` (or ``HH:MM:SS``, or a ``time``) as the day change; ``None``/``""`` -> the default 04:00."""
    if value is None or value == "":
        return DEFAULT_DAY_CHANGE
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    match = _HHMM_RE.match(str(value))
    if not match or int(match[1]) > 23:
        raise BadTime(f"day change {value!r} is not a time of day HH:MM")
    return time(int(match[1]), int(match[2]), int(match[3] or 0))


def event_day_change(event_record: Mapping[str, Any]) -> time:
    """The event's day change from ``x-schedule.day_change``; the default when absent or unreadable."""
    try:
        return parse_day_change(x_schedule(event_record).get("day_change"))
    except BadTime:
        return DEFAULT_DAY_CHANGE


def conference_date(wall: datetime, day_change: time = DEFAULT_DAY_CHANGE) -> date:
    """The local conference day of a wall time: before the day change it still belongs to the previous date."""
    shift = timedelta(hours=day_change.hour, minutes=day_change.minute, seconds=day_change.second)
    return (wall.replace(tzinfo=None) - shift).date()


@dataclass(frozen=True)
class ConferenceDay:
    index: int  # 1-based
    date: date
    start: datetime  # aware, in the event's zone
    end: datetime


def day_bounds(day: date, tz: tzinfo, day_change: time = DEFAULT_DAY_CHANGE) -> tuple[datetime, datetime]:
    """From this date's day change to the next date's, aware in ``tz``."""
    start = localize(datetime.combine(day, day_change), tz)
    end = localize(datetime.combine(day + timedelta(days=1), day_change), tz)
    return start, end


def conference_days(first: date, last: date, tz: tzinfo, day_change: time = DEFAULT_DAY_CHANGE) -> list[ConferenceDay]:
    """Every conference day from ``first`` to ``last`` inclusive, indexed from 1."""
    days = []
    current, index = first, 1
    while current <= last:
        start, end = day_bounds(current, tz, day_change)
        days.append(ConferenceDay(index, current, start, end))
        current += timedelta(days=1)
        index += 1
    return days


def date_span(dates: Iterable[date]) -> tuple[date, date] | None:
    """(first, last) of some dates, ``None`` when there are none."""
    first = last = None
    for value in dates:
        first = value if first is None or value < first else first
        last = value if last is None or value > last else last
    return (first, last) if first is not None and last is not None else None


__all__ = ["DEFAULT_DAY_CHANGE", "MAX_DURATION_MINUTES", "BadTime", "ConferenceDay", "conference_date",
           "conference_days", "date_span", "day_bounds", "event_day_change", "event_zone", "format_duration",
           "iso_local", "localize", "minutes_between", "parse_day_change", "parse_duration", "parse_wall", "zone",
           "zone_name"]
