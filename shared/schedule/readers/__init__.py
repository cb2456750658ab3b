"""Schedule files -> Open Event legacy records: frab XML, schedule.json, iCal, xCal, Pentabarf XML, CSV.

``read_schedule(data, fmt, limits)`` returns a ``ScheduleBuilder`` whose ``records()`` are the legacy archive's
files and whose ``warnings`` say what was repaired. ``detect_format(data, claimed)`` decides from the content (the
name a client chose is only a hint). Errors are ``ArchiveError``s, as for zip archives.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.archive.safezip import ArchiveError
from shared.schedule.readers import csv_zip, frab_xml, ical, schedule_json, xcal
from shared.schedule.readers.builder import ScheduleBuilder
from shared.schedule.readers.detect import detect_format
from shared.schedule.readers.safety import ScheduleLimits

# Import formats: the export identifiers; "json" is the Open Event zip (read by shared/archive, not here).
IMPORT_FORMATS = ("json", "frab-xml", "schedule-json", "schedule2-json", "ical", "xcal", "pentabarf", "csv")
# Names clients post to besides the identifiers (the Open Event frontend posts pentabarf, ical and xcal).
ALIASES = {"schedule-xml": "frab-xml", "frab": "frab-xml", "xml": "frab-xml", "ics": "ical", "schedule.json":
           "schedule-json", "zip": "json"}

_READERS: dict[str, Callable[..., ScheduleBuilder]] = {
    "frab-xml": frab_xml.read,
    "pentabarf": frab_xml.read,
    "schedule-json": schedule_json.read,
    "schedule2-json": schedule_json.read,
    "ical": ical.read,
    "xcal": xcal.read,
}


def import_format(name: str) -> str | None:
    """The identifier for a format name a client used, or None."""
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    return name if name in IMPORT_FORMATS else None


def read_schedule(data: bytes, fmt: str, limits: ScheduleLimits,
                  pause: Callable[[float], None] | None = None) -> ScheduleBuilder:
    """``data`` as the schedule format ``fmt`` (not "json", and not "csv": see ``read_csv_zip``); ``pause(0)`` is
    called every few hundred sessions (the importer passes ``eventlet.sleep``)."""
    reader = _READERS.get(fmt)
    if reader is None:
        raise ArchiveError("unknown_format", f"{fmt!r} is not a schedule format this importer reads")
    return reader(data, limits, fmt, pause)


read_csv_zip = csv_zip.read

__all__ = ["IMPORT_FORMATS", "ScheduleBuilder", "ScheduleLimits", "detect_format", "import_format", "read_csv_zip",
           "read_schedule"]
