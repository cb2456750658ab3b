"""Which format an uploaded file is, from its first bytes: the extension or route a client chose may lie."""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path

from shared.archive.safezip import ArchiveError

HEAD_BYTES = 64 * 1024
_XML_ROOT = re.compile(r"<([A-Za-z_][\w.:-]*)")
_SKIP = re.compile(r"\s*(<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(\[.*?\])?\s*>)", re.DOTALL)


def detect_format(path: Path, claimed: str) -> str:
    """One of the import identifiers; ``claimed`` decides only between formats the content cannot tell apart
    (frab XML and Pentabarf XML share one shape)."""
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    if not head.strip():
        raise ArchiveError("empty_archive", "the uploaded file is empty")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "csv" if _csv_zip(path) else "json"
    text = _head_text(head)
    if text.startswith(("{", "[")):
        return claimed if claimed == "schedule2-json" else "schedule-json"
    if text[:15].upper().startswith("BEGIN:VCALENDAR"):
        return "ical"
    if text.startswith("<"):
        root = _xml_root(text)
        if root in ("iCalendar", "vcalendar", "icalendar"):
            return "xcal"
        if root == "schedule":
            return claimed if claimed in ("frab-xml", "pentabarf") else "frab-xml"
        raise ArchiveError("unknown_format", f"the uploaded XML has the root element <{root}>, which is neither a "
                           "schedule (<schedule>) nor an xCal calendar (<iCalendar>)")
    first_line = text.split("\n", 1)[0].lower()
    if "," in first_line or ";" in first_line or "\t" in first_line:  # Excel's "Unicode text" uses tabs
        if "title" in first_line:
            return "csv"
    raise ArchiveError("unknown_format", "the uploaded file is none of the formats read here (Open Event zip, "
                       "frab/Pentabarf XML, schedule.json, iCal, xCal, CSV)")


def _head_text(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("utf-8", errors="ignore")
    return text.lstrip("\ufeff \t\r\n")


def _xml_root(text: str) -> str:
    position = 0
    while True:
        skipped = _SKIP.match(text, position)
        if skipped is None or skipped.end() == position:
            break
        position = skipped.end()
    match = _XML_ROOT.match(text, len(text) - len(text[position:].lstrip()))
    if match is None:
        raise ArchiveError("unknown_format", "the uploaded file starts like XML but has no element")
    return match.group(1).rsplit(":", 1)[-1]


def _csv_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = {posixpath.basename(n).lower() for n in archive.namelist()[:1000]}
    except (zipfile.BadZipFile, OSError):
        return False  # the archive reader reports what is wrong with it
    return "sessions.csv" in names
