"""The one step between download and the archive reader: an uploaded schedule file (frab XML, schedule.json, iCal,
xCal, Pentabarf, CSV) becomes a legacy Open Event archive folder in the job's scratch directory, and the reader,
validation and the one transaction then run exactly as for a zip.

What the upload is comes from its content (``detect_format``); the format it was posted as only settles what content
cannot (frab vs Pentabarf XML), and a mismatch is a warning. The reader's repairs are warnings of the import, put
before the archive's own; under ``strict`` they fail it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.archive.reader import ArchiveError, ArchiveLimits, EventArchive, open_archive
from shared.archive.safezip import issue
from shared.contracts import MAX_WARNINGS
from shared.schedule.readers import ScheduleLimits, detect_format, read_csv_zip, read_schedule
from shared.schedule.readers.archive_out import write_folder


def open_upload(path: Path, claimed: str, scratch: Path, limits: ArchiveLimits, *, strict: bool = False,
                pause: Callable[[float], None] | None = None) -> EventArchive:
    """The upload at ``path`` as an opened archive (a context manager, like ``open_archive``)."""
    try:
        found = detect_format(path, claimed)
    except ArchiveError:
        if claimed != "json":
            raise
        found = "json"  # the zip route keeps the archive reader's own verdict on what is not a zip (not_a_zip...)
    notes = []
    if found != claimed:
        notes.append(issue("format_detected", f"the file was posted as {claimed} but holds {found}; read as {found}"))
    if found == "json":
        try:
            archive = open_archive(path, limits, strict=strict)
        except ArchiveError as exc:
            if claimed == "json":
                raise
            # Posted as a schedule format, the zip's own complaint alone would puzzle: say what the file is first.
            error = ArchiveError(exc.code, f"the file posted as {claimed} is a zip archive, neither a CSV zip (no "
                                 f"sessions.csv) nor a valid Open Event archive: {exc.message}", file=None,
                                 field=exc.field)
            error.errors, error.errors_total = exc.errors, exc.errors_total
            raise error from None
        return _with_warnings(archive, notes, len(notes))
    schedule_limits = ScheduleLimits.from_archive(limits)
    if found == "csv":
        schedule = read_csv_zip(path, limits, schedule_limits, pause)
    else:
        schedule = read_schedule(path.read_bytes(), found, schedule_limits, pause)
    records = schedule.records()
    if strict and schedule.warnings:
        first = schedule.warnings[0]
        error = ArchiveError("repair_needed", f"{first['message']} (a strict import repairs nothing)",
                             file=first.get("file"), record_id=first.get("record_id"), field=first.get("field"))
        error.errors = [{**w, "code": "repair_needed"} for w in schedule.warnings[:100]]
        error.errors_total = schedule.warnings_total
        raise error
    folder = write_folder(records, scratch / "converted")
    archive = open_archive(folder, limits, strict=strict)
    return _with_warnings(archive, notes + schedule.warnings, len(notes) + schedule.warnings_total)


def _with_warnings(archive: EventArchive, warnings: list[dict[str, Any]], total: int) -> EventArchive:
    if warnings:
        archive.warnings[:0] = warnings[:MAX_WARNINGS]
        del archive.warnings[MAX_WARNINGS:]
        archive.warnings_total += total
    return archive
