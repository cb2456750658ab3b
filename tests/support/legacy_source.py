"""Test helper: archive files parsed verbatim, and loaded from that parse (no variants, no repairs, no limits).

The system reads archives only through the hardened reader (``shared.archive.reader``; ``loader.load_archive``).
Round-trip tests need the other view too, the archive's files exactly as written, to compare what the database
gives back against: ``read_legacy_source`` is that view, ``load_legacy_event`` loads it as it stands.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession

from shared.archive.loader import LoadError, LoadResult, load_event
from shared.archive.variants import DATA_FILES

MAX_MEMBER_BYTES = 512 * 1024 * 1024

# Canonical file -> the names it has been seen under: the reader's table, without ``meta`` (never loaded).
FILE_NAMES = {canonical: names for canonical, names in DATA_FILES.items() if canonical != "meta"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(file: str, raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoadError(f"invalid JSON: {exc}", file=file) from None


def _zip_reader(path: Path) -> Callable[[str], bytes | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoadError(f"not a readable zip archive: {exc}") from None
    members = {info.filename: info for info in archive.infolist() if not info.is_dir()}
    prefix = ""
    if not any(name in members for name in FILE_NAMES["event"]):
        # Tolerate archives packed with one top-level folder.
        tops = {name.split("/", 1)[0] for name in members if "/" in name}
        for top in tops:
            if any(f"{top}/{name}" in members for name in FILE_NAMES["event"]):
                prefix = top + "/"
                break

    def read(name: str) -> bytes | None:
        info = members.get(prefix + name)
        if info is None:
            return None
        if info.file_size > MAX_MEMBER_BYTES:
            raise LoadError(f"member too large ({info.file_size} bytes)", file=name)
        try:
            with archive.open(info) as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise LoadError(f"unreadable zip member: {exc}", file=name) from None
        if len(data) > MAX_MEMBER_BYTES:  # the header lied about the size
            raise LoadError("member too large", file=name)
        return data

    return read


def _folder_reader(path: Path) -> Callable[[str], bytes | None]:
    def read(name: str) -> bytes | None:
        candidate = path / name
        return candidate.read_bytes() if candidate.is_file() else None

    return read


def read_legacy_source(source: Path | str) -> dict[str, Any]:
    """Parsed files of a legacy archive folder or zip, under canonical names; missing optional files are absent."""
    source = Path(source)
    if source.is_dir():
        read = _folder_reader(source)
    elif source.is_file():
        read = _zip_reader(source)
    else:
        raise LoadError(f"archive not found: {source}")
    data: dict[str, Any] = {}
    for canonical, names in FILE_NAMES.items():
        for name in names:
            raw = read(name)
            if raw is not None:
                data[canonical] = _parse(canonical, raw)
                break
    if "event" not in data:
        raise LoadError("missing", file="event")
    return data


class ParsedSource:
    """A source over already parsed files under canonical names (what ``read_legacy_source`` returns)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def event(self) -> dict[str, Any]:
        event = self.data.get("event")
        if not isinstance(event, dict):
            raise LoadError("expected a JSON object", file="event")
        event = dict(event)
        if "social_links" not in event and isinstance(self.data.get("social_links"), list):
            event["social_links"] = self.data["social_links"]  # 2016 archives kept them in a separate file
        return event

    def records(self, file: str) -> Iterable[Any]:
        value = self.data.get(file)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise LoadError("expected a JSON array", file=file)
        return value


def load_legacy_event(db_session: OrmSession | Connection, source: Path | str, *, keep_ids: bool = True,
                      owner_user_id: int | None = None) -> LoadResult:
    """Load a legacy archive folder or zip as one new event, in the caller's transaction (the caller commits)."""
    return load_legacy_data(db_session, read_legacy_source(source), keep_ids=keep_ids, owner_user_id=owner_user_id)


def load_legacy_data(
    db_session: OrmSession | Connection,
    data: Mapping[str, Any],
    *,
    keep_ids: bool = True,
    owner_user_id: int | None = None,
) -> LoadResult:
    """Like ``load_legacy_event`` for already parsed files (canonical names, as ``read_legacy_source`` returns)."""
    return load_event(db_session, ParsedSource(data), keep_ids=keep_ids, owner_user_id=owner_user_id)
