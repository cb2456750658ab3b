"""Safe access to the members of an uploaded archive (a zip file, or a folder for tests and tools).

Archives are hostile input. Everything that can be checked from the zip's directory is checked when the source is
opened (member count, names, links, duplicates, declared sizes, compression ratio, overlapping entries); what the
directory could lie about is enforced again while the bytes are read (``LimitedReader``). Nothing is ever extracted
to disk: members are streamed from the zip file on each read.

Error codes raised here (``ArchiveError.code``): ``not_found``, ``empty_archive``, ``archive_too_large``,
``not_a_zip``, ``bad_zip``, ``too_many_members``, ``unsafe_path``, ``symlink``, ``special_file``,
``duplicate_member``, ``encrypted_member``, ``unsupported_compression``, ``member_too_large``, ``total_too_large``,
``compression_ratio``, ``overlapping_members``.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# Members smaller than this are not ratio-checked: a few KiB of JSON may compress absurdly well, and that is harmless.
RATIO_FLOOR = 1 * 2**20
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds applied to an uploaded archive; every one of them ends in an ``ArchiveError`` when exceeded."""

    max_archive_bytes: int = 512 * 2**20  # the zip file itself
    max_members: int = 20_000
    max_member_bytes: int = 256 * 2**20  # uncompressed, per member
    max_total_bytes: int = 1 * 2**30  # uncompressed, all members together
    max_ratio: float = 200.0  # uncompressed / compressed, for members over RATIO_FLOOR
    max_string_chars: int = 1_000_000  # any JSON string or key
    max_depth: int = 64  # JSON nesting, the top-level container counting as 1
    max_records: int = 2_000_000  # per array file
    max_object_bytes: int = 16 * 2**20  # files parsed whole (event, meta, social_links)
    # Relation fan-out per record (checked while the list is read, jsonstream.py): entries of a session's speakers,
    # of a speaker's sessions, of a track's sessions. Real events stay far below; one huge list is an attack.
    max_session_speakers: int = 1_000
    max_speaker_sessions: int = 10_000
    max_track_sessions: int = 100_000


class ArchiveError(Exception):
    """Why an archive is refused. ``message`` names the file and record: ``File sessions, ID 12: track 99 ...``.

    Raised by a full validation, it is the first problem found and carries them all: ``errors`` (dicts like
    ``to_dict()``, at most the reader's cap) and ``errors_total``; empty / 0 when it stopped at this one.
    """

    errors: list[dict[str, Any]] = []  # noqa: RUF012 (never mutated: instances get a list of their own)
    errors_total: int = 0

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        file: str | None = None,
        record_id: Any = None,
        field: str | None = None,
        position: int | None = None,
    ) -> None:
        self.code = code
        self.detail = detail
        self.file = file
        self.record_id = record_id
        self.field = field
        self.message = describe(detail, file, record_id, position)
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "record_id": self.record_id,
            "field": self.field,
        }


def describe(detail: str, file: str | None, record_id: Any = None, position: int | None = None) -> str:
    """``File sessions, ID 12: detail`` (or ``record #3`` when the record has no usable id)."""
    if file is None:
        return detail
    if record_id is not None:
        return f"File {file}, ID {record_id}: {detail}"
    if position is not None:
        return f"File {file}, record #{position + 1}: {detail}"
    return f"File {file}: {detail}"


def issue(
    code: str, detail: str, *, file: str | None = None, record_id: Any = None, field: str | None = None
) -> dict[str, Any]:
    """A warning, shaped like ``ArchiveError.to_dict()``."""
    return {
        "code": code,
        "message": describe(detail, file, record_id),
        "file": file,
        "record_id": record_id,
        "field": field,
    }


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name must not be used (None if it is a plain relative POSIX path)."""
    if not name:
        return "empty name"
    if "\x00" in name or any(ord(c) < 0x20 for c in name):
        return "control character in name"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE_RE.match(name):
        return "drive letter"
    parts = name.rstrip("/").split("/")
    if any(part == ".." for part in parts):
        return "'..' in path"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' path component"
    return None


@dataclass(frozen=True)
class Member:
    name: str
    size: int  # declared uncompressed size
    compressed: int | None  # None for folder members


class LimitedReader(io.RawIOBase):
    """A member's bytes, with the limits enforced on what is actually read (headers can lie)."""

    def __init__(
        self,
        raw: BinaryIO,
        *,
        label: str,
        limit: int,
        compressed: int | None,
        max_ratio: float,
        hasher: Any = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._label = label
        self._limit = limit
        self._compressed = compressed
        self._max_ratio = max_ratio
        self._hasher = hasher
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._raw.read(len(buffer))
        except ArchiveError:
            raise
        except _READ_ERRORS as exc:
            raise ArchiveError("bad_zip", f"unreadable zip member ({exc})", file=self._label) from None
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.count > self._limit:
            raise ArchiveError(
                "member_too_large", f"more than {self._limit} bytes once uncompressed", file=self._label
            )
        if (
            self._compressed is not None
            and self.count > RATIO_FLOOR
            and self.count > max(self._compressed, 1) * self._max_ratio
        ):
            raise ArchiveError(
                "compression_ratio", f"compression ratio above {self._max_ratio:g} (zip bomb?)", file=self._label
            )
        if self._hasher is not None and n:
            self._hasher.update(data)
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class Source:
    """Members of an archive by name (directories left out), each opened as a ``LimitedReader``."""

    members: dict[str, Member]
    limits: ArchiveLimits

    def open(self, name: str, *, label: str | None = None, hasher: Any = None) -> LimitedReader:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _eocd_entries(fh: BinaryIO, size: int) -> int | None:
    """Entry count claimed by the end-of-central-directory record, read before zipfile parses (and allocates) it."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None
    entries = int.from_bytes(tail[pos + 10 : pos + 12], "little")
    if entries == 0xFFFF and pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":
        # Zip64: the real count is in the zip64 end record the locator points to.
        (offset,) = struct.unpack("<Q", tail[pos - 12 : pos - 4])
        if offset + 56 <= size:
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06":
                (entries,) = struct.unpack("<Q", record[32:40])
    return entries


class ZipSource(Source):
    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.path = path
        self.limits = limits
        size = path.stat().st_size
        if size == 0:
            raise ArchiveError("empty_archive", "the archive is an empty file")
        if size > limits.max_archive_bytes:
            raise ArchiveError("archive_too_large", f"the archive is larger than {limits.max_archive_bytes} bytes")
        self._fh = open(path, "rb")  # noqa: SIM115 - kept open for the life of the source
        try:
            self._open(size)
        except BaseException:
            self._fh.close()
            raise

    def _open(self, size: int) -> None:
        limits, fh = self.limits, self._fh
        entries = _eocd_entries(fh, size)
        if entries is None:
            fh.seek(0)
            if fh.read(4) == b"PK\x03\x04":
                raise ArchiveError("bad_zip", "truncated or corrupt zip archive (no central directory)")
            raise ArchiveError("not_a_zip", "not a zip archive")
        if entries > limits.max_members:
            raise ArchiveError("too_many_members", f"more than {limits.max_members} members")
        try:
            self._zip = zipfile.ZipFile(fh)
            infos = self._zip.infolist()
        except zipfile.LargeZipFile as exc:
            raise ArchiveError("bad_zip", f"unsupported zip archive ({exc})") from None
        except (*_READ_ERRORS, struct.error, UnicodeDecodeError, KeyError, IndexError, OverflowError) as exc:
            raise ArchiveError("bad_zip", f"corrupt zip archive ({exc})") from None
        if len(infos) > limits.max_members:
            raise ArchiveError("too_many_members", f"more than {limits.max_members} members")

        self.members = {}
        self._infos: dict[str, zipfile.ZipInfo] = {}
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = info.orig_filename  # zipfile cuts names at NUL; check what the archive really says
            reason = unsafe_name_reason(name)
            if reason is not None:
                raise ArchiveError("unsafe_path", f"unsafe member name {name!r}: {reason}")
            key = unicodedata.normalize("NFC", name)
            if key in seen:
                raise ArchiveError("duplicate_member", f"member {name!r} appears more than once")
            seen.add(key)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise ArchiveError("symlink", f"member {name!r} is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError("special_file", f"member {name!r} is not a regular file")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise ArchiveError("encrypted_member", f"member {name!r} is encrypted")
            if info.compress_type not in _SUPPORTED_METHODS:
                raise ArchiveError(
                    "unsupported_compression", f"member {name!r} uses compression method {info.compress_type}"
                )
            if info.file_size > limits.max_member_bytes:
                raise ArchiveError(
                    "member_too_large", f"member {name!r} is larger than {limits.max_member_bytes} bytes"
                )
            total += info.file_size
            self.members[name] = Member(name, info.file_size, info.compress_size)
            self._infos[name] = info
        if total > limits.max_total_bytes:
            raise ArchiveError("total_too_large", f"more than {limits.max_total_bytes} bytes once uncompressed")
        for member in self.members.values():
            if member.size > RATIO_FLOOR and member.size > max(member.compressed or 0, 1) * limits.max_ratio:
                raise ArchiveError(
                    "compression_ratio", f"member {member.name!r} has a compression ratio above {limits.max_ratio:g}"
                )
        self._check_layout(size)

    def _check_layout(self, size: int) -> None:
        # Entries whose data overlap (several names sharing one compressed stream) are the core of the
        # "non-recursive" zip bombs; an honest archive never has them.
        start_dir = getattr(self._zip, "start_dir", size)
        spans = []
        for info in self._zip.infolist():
            self._fh.seek(info.header_offset)
            header = self._fh.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise ArchiveError("bad_zip", f"corrupt local header for member {info.orig_filename!r}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            end = info.header_offset + 30 + name_len + extra_len + info.compress_size
            if end > start_dir:
                raise ArchiveError("bad_zip", f"member {info.orig_filename!r} runs past the end of its data")
            spans.append((info.header_offset, end, info.orig_filename))
        spans.sort()
        for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise ArchiveError("overlapping_members", f"members {name!r} and {other!r} share data")

    def open(self, name: str, *, label: str | None = None, hasher: Any = None) -> LimitedReader:
        info = self._infos[name]
        label = label or name
        try:
            raw = self._zip.open(info)
        except _READ_ERRORS as exc:
            raise ArchiveError("bad_zip", f"unreadable zip member ({exc})", file=label) from None
        return LimitedReader(
            raw,
            label=label,
            limit=min(info.file_size, self.limits.max_member_bytes),
            compressed=info.compress_size,
            max_ratio=self.limits.max_ratio,
            hasher=hasher,
        )

    def close(self) -> None:
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()
        self._fh.close()


class FolderSource(Source):
    """An unpacked archive (the samples, tools). Links and special files are refused like in a zip."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.path = path
        self.limits = limits
        self.members = {}
        total = 0
        pending = [path]
        while pending:
            folder = pending.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = Path(entry.path).relative_to(path).as_posix()
                    if entry.is_symlink():
                        raise ArchiveError("symlink", f"member {name!r} is a symbolic link")
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        raise ArchiveError("special_file", f"member {name!r} is not a regular file")
                    reason = unsafe_name_reason(name)
                    if reason is not None:
                        raise ArchiveError("unsafe_path", f"unsafe member name {name!r}: {reason}")
                    size = entry.stat(follow_symlinks=False).st_size
                    if size > limits.max_member_bytes:
                        raise ArchiveError(
                            "member_too_large", f"member {name!r} is larger than {limits.max_member_bytes} bytes"
                        )
                    total += size
                    if total > limits.max_total_bytes:
                        raise ArchiveError("total_too_large", f"more than {limits.max_total_bytes} bytes in all")
                    self.members[name] = Member(name, size, None)
                    if len(self.members) > limits.max_members:
                        raise ArchiveError("too_many_members", f"more than {limits.max_members} members")

    def open(self, name: str, *, label: str | None = None, hasher: Any = None) -> LimitedReader:
        member = self.members[name]
        raw = open(self.path / name, "rb")  # noqa: SIM115 - owned by the returned reader
        return LimitedReader(
            raw,
            label=label or name,
            limit=min(max(member.size, 0), self.limits.max_member_bytes),
            compressed=None,
            max_ratio=self.limits.max_ratio,
            hasher=hasher,
        )


def open_source(path: Path, limits: ArchiveLimits) -> Source:
    """A zip file or a folder, checked against ``limits``."""
    try:
        if path.is_dir():
            return FolderSource(path, limits)
        if path.is_file():
            return ZipSource(path, limits)
    except OSError as exc:
        raise ArchiveError("not_found", f"archive not readable: {exc}") from None
    raise ArchiveError("not_found", f"archive not found: {path}")

