"""Generator of hostile Open Event archives, for the reader's and the importer's tests.

``hostile_cases(tmp_dir)`` writes 80+ archives (each small on disk: bombs are built from highly compressible data,
limits that would need huge files are shown with a case-specific ``limits``) and says which ``ArchiveError`` code
and file each one must end in. ``valid_archive(tmp_dir)`` writes the well-formed legacy archive the JSON cases are
derived from. A raw zip writer is included because ``zipfile`` refuses to write most of these.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.archive.reader import ArchiveLimits

MiB = 2**20


@dataclass(frozen=True)
class HostileCase:
    name: str
    path: Path
    expected_code: str
    expected_file: str | None  # None: the archive as a whole is at fault
    limits: ArchiveLimits | None = None  # None: the defaults


# ------------------------------------------------------------------------------------------------------ content


def base_files() -> dict[str, Any]:
    """A small, valid legacy event: every file, every relation used once."""
    session = {
        "id": 1,
        "title": "Talk one",
        "subtitle": None,
        "short_abstract": "",
        "long_abstract": "",
        "start_time": "2024-05-01T09:00:00",
        "end_time": "2024-05-01T09:30:00",
        "session_type": {"id": 1, "length": 0.3, "name": "Talk"},
        "track": {"id": 1, "name": "Main"},
        "comments": "",
        "language": None,
        "slides": None,
        "audio": None,
        "video": None,
        "microlocation": {"id": 1, "name": "Room A"},
        "signup_url": None,
        "speakers": [{"id": 1, "name": "Ada Lovelace", "organisation": "Engines"}],
        "state": "accepted",
    }
    second = {**copy.deepcopy(session), "id": 2, "title": "Talk two"}
    second["speakers"] = [{"id": 2, "name": "Bob Babbage", "organisation": "Engines"}]
    return {
        "event": {
            "id": 1,
            "name": "Hostile Test Event",
            "latitude": 52.5,
            "longitude": 13.4,
            "location_name": "Berlin",
            "start_time": "2024-05-01T09:00:00",
            "end_time": "2024-05-02T18:00:00",
            "timezone": "Europe/Berlin",
            "description": "",
            "background_image": None,
            "logo": None,
            "organizer_name": "Org",
            "organizer_description": "",
            "social_links": [{"id": 1, "link": "https://example.org", "name": "Web"}],
            "ticket_url": None,
            "privacy": "public",
            "type": "Conference",
            "topic": None,
            "sub_topic": None,
            "code_of_conduct": "",
            "copyright": None,
        },
        "microlocations": [{"id": 1, "name": "Room A", "floor": 1}],
        "sessions": [session, second],
        "speakers": [
            {"id": 1, "name": "Ada Lovelace", "organisation": "Engines", "photo": None,
             "sessions": [{"id": 1, "title": "Talk one"}]},
            {"id": 2, "name": "Bob Babbage", "organisation": "Engines", "photo": None,
             "sessions": [{"id": 2, "title": "Talk two"}]},
        ],
        "sponsors": [{"id": 1, "name": "Sponsor", "logo": None, "level": "1", "sponsor_type": "Gold"}],
        "tracks": [{"id": 1, "name": "Main", "color": "#000000",
                    "sessions": [{"id": 1, "title": "Talk one"}, {"id": 2, "title": "Talk two"}]}],
        "session_types": [{"id": 1, "name": "Talk", "length": "00:30"}],
        "forms": [{"id": 1, "session_form": "{}", "speaker_form": "{}"}],
        "meta": {"root_url": "https://example.org/"},
    }


def encode(files: dict[str, Any]) -> dict[str, bytes]:
    return {
        name: value if isinstance(value, bytes) else json.dumps(value, indent=4, ensure_ascii=False).encode()
        for name, value in files.items()
    }


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def valid_archive(tmp_dir: Path, name: str = "valid.zip") -> Path:
    return write_zip(tmp_dir / name, encode(base_files()))


# ------------------------------------------------------------------------------------------------ raw zip writer


@dataclass
class RawEntry:
    """One zip entry written byte by byte: sizes, CRC, attributes and names can all be wrong on purpose."""

    name: str | bytes
    payload: bytes  # as stored (already compressed for method 8)
    crc: int
    file_size: int
    compress_size: int | None = None  # None: len(payload)
    method: int = zipfile.ZIP_DEFLATED
    external_attr: int = (stat.S_IFREG | 0o644) << 16
    flag_bits: int = 0x800  # names are UTF-8
    central_name: str | bytes | None = None  # a different name in the central directory
    share_header_of: int | None = None  # index of an earlier entry whose local header this one points at
    extra: dict[str, Any] = field(default_factory=dict)


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def stored(name: str, data: bytes, **kwargs: Any) -> RawEntry:
    return RawEntry(name, data, zlib.crc32(data), len(data), method=zipfile.ZIP_STORED, **kwargs)


def deflated(name: str, data: bytes, **kwargs: Any) -> RawEntry:
    return RawEntry(name, deflate(data), zlib.crc32(data), len(data), **kwargs)


@functools.cache
def zeros_stream(size: int) -> tuple[bytes, int]:
    """Deflated ``size`` zero bytes and their CRC, built chunk by chunk (never holding ``size`` bytes)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    parts, crc, left = [], 0, size
    while left:
        piece = chunk if left >= MiB else bytes(left)
        parts.append(compressor.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts), crc


def zeros(name: str, size: int, **kwargs: Any) -> RawEntry:
    payload, crc = zeros_stream(size)
    return RawEntry(name, payload, crc, size, **kwargs)


def _name_bytes(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8")


def write_raw_zip(path: Path, entries: list[RawEntry]) -> Path:
    offsets: list[int] = []
    with open(path, "wb") as out:
        for entry in entries:
            if entry.share_header_of is not None:
                offsets.append(offsets[entry.share_header_of])
                continue
            offsets.append(out.tell())
            name = _name_bytes(entry.name)
            size = len(entry.payload) if entry.compress_size is None else entry.compress_size
            out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, entry.flag_bits, entry.method, 0, 0x21,
                                  entry.crc, size, entry.file_size, len(name), 0))
            out.write(name)
            out.write(entry.payload)
        start = out.tell()
        for entry, offset in zip(entries, offsets, strict=True):
            name = _name_bytes(entry.central_name if entry.central_name is not None else entry.name)
            size = len(entry.payload) if entry.compress_size is None else entry.compress_size
            out.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 20, 20, entry.flag_bits, entry.method, 0,
                                  0x21, entry.crc, size, entry.file_size, len(name), 0, 0, 0, 0,
                                  entry.external_attr, offset))
            out.write(name)
        end = out.tell()
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), end - start, start, 0))
    return path


def json_entries(files: dict[str, Any]) -> list[RawEntry]:
    return [deflated(name, data) for name, data in encode(files).items()]


# --------------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class HostileSpec:
    """A case before its archive is written (cheap: lets tests parametrize by name)."""

    name: str
    expected_code: str
    expected_file: str | None
    build: Callable[[Path], Path]
    limits: ArchiveLimits | None = None

    def write(self, tmp_dir: Path) -> HostileCase:
        path = self.build(Path(tmp_dir) / f"{self.name}.zip")
        return HostileCase(self.name, path, self.expected_code, self.expected_file, self.limits)


def hostile_cases(tmp_dir: Path) -> list[HostileCase]:
    """Write every hostile archive under ``tmp_dir``; each must end in ``expected_code`` naming ``expected_file``."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return [spec.write(tmp_dir) for spec in hostile_specs()]


def hostile_specs() -> list[HostileSpec]:
    cases: list[HostileSpec] = []

    def add(name: str, code: str, file: str | None, build: Callable[[Path], Path], limits: ArchiveLimits | None = None):
        cases.append(HostileSpec(name, code, file, build, limits))

    def raw(entries: list[RawEntry] | Callable[[], list[RawEntry]]) -> Callable[[Path], Path]:
        # Big payloads are given as a factory, so that nothing heavy happens until the archive is written.
        return lambda path: write_raw_zip(path, entries() if callable(entries) else entries)

    def with_files(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
        def build(path: Path) -> Path:
            files = base_files()
            change(files)
            return write_zip(path, encode(files))

        return build

    def replace(file: str, value: Any) -> Callable[[Path], Path]:
        def change(files: dict[str, Any]) -> None:
            files[file] = value

        return with_files(change)

    def edit(fn: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
        return with_files(fn)

    good = json_entries(base_files())

    # --- zip bombs and limits ------------------------------------------------------------------------------
    add("bomb_ratio_media", "compression_ratio", None, raw(lambda: [*good, zeros("images/logo.png", 20 * MiB)]))
    add("bomb_ratio_json", "compression_ratio", None,
        raw(lambda: [e for e in good if e.name != "sessions"]
            + [deflated("sessions", b"[" + b" " * (20 * MiB) + b"]")]))
    add("bomb_member_too_large", "member_too_large", None,
        raw(lambda: [*good, zeros("videos/session_1.mp4", 257 * MiB)]))
    add("bomb_total_size", "total_too_large", None,
        raw(lambda: [*good] + [zeros(f"videos/session_{i}.mp4", 230 * MiB) for i in range(1, 6)]))
    add("bomb_declared_size_lie", "member_too_large", None,
        raw([*good, RawEntry("audios/session_1.mp3", deflate(b"x" * 100), zlib.crc32(b"x" * 100), 2**32 - 2)]))
    add("bomb_overlapping_entries", "overlapping_members", None,
        raw(lambda: [*good, zeros("images/a.png", 512 * 1024),
                   RawEntry("images/b.png", b"", 0, 0, share_header_of=len(good))]))

    def lying_size(path: Path) -> Path:
        data = json.dumps(base_files()["sessions"]).encode() + b" " * (3 * MiB)
        entry = deflated("sessions", data)
        entry.file_size = 64 * 1024  # claims far less than it inflates to: zipfile stops there, the CRC fails
        return write_raw_zip(path, [e for e in good if e.name != "sessions"] + [entry])

    add("bomb_size_lie_while_reading", "bad_zip", "sessions", lying_size)
    add("many_members", "too_many_members", None,
        raw(lambda: [*good] + [stored(f"m/{i:05d}", b"") for i in range(20_001)]))

    def too_large_file(path: Path) -> Path:
        write_zip(path, encode(base_files()))
        with open(path, "r+b") as fh:  # sparse: nothing more is written to disk
            fh.truncate(513 * MiB)
        return path

    add("archive_too_large", "archive_too_large", None, too_large_file)

    # --- names and entry types -----------------------------------------------------------------------------
    for name, bad in [
        ("absolute_path", "/etc/passwd"),
        ("dotdot_path", "../evil.sh"),
        ("dotdot_nested", "images/../../evil.sh"),
        ("backslash_path", "images\\..\\..\\evil.sh"),
        ("drive_letter", "C:/Windows/evil.dll"),
        ("nul_in_name", b"images/a.jpg\x00.sh"),
        ("dot_component", "images/./a.jpg"),
    ]:
        add(name, "unsafe_path", None, raw([*good, stored(bad, b"x")]))
    add("symlink_member", "symlink", None,
        raw([*good, stored("images/link.jpg", b"/etc/passwd", external_attr=(stat.S_IFLNK | 0o777) << 16)]))
    add("device_member", "special_file", None,
        raw([*good, stored("images/dev", b"", external_attr=(stat.S_IFCHR | 0o600) << 16)]))
    add("duplicate_member", "duplicate_member", None, raw([*good, deflated("event", b"{}")]))
    add("duplicate_member_unicode", "duplicate_member", None,
        raw([*good, stored("images/caf\u00e9.jpg", b"x"), stored("images/cafe\u0301.jpg", b"y")]))
    add("encrypted_member", "encrypted_member", None, raw([*good, stored("images/a.jpg", b"x", flag_bits=0x801)]))
    add("unsupported_method", "unsupported_compression", None,
        raw([*good, RawEntry("images/a.jpg", b"x", zlib.crc32(b"x"), 1, method=98)]))

    def folder_with_symlink(path: Path) -> Path:
        folder = path.with_suffix("")
        folder.mkdir()
        for name, data in encode(base_files()).items():
            (folder / name).write_bytes(data)
        (folder / "images").mkdir()
        os.symlink("/etc/passwd", folder / "images" / "logo.png")
        return folder

    add("folder_symlink", "symlink", None, folder_with_symlink)

    # --- not a (readable) zip ------------------------------------------------------------------------------
    def truncated(keep: Callable[[int], int]) -> Callable[[Path], Path]:
        def build(path: Path) -> Path:
            data = write_zip(path, encode(base_files())).read_bytes()
            path.write_bytes(data[: keep(len(data))])
            return path

        return build

    add("truncated_half", "bad_zip", None, truncated(lambda n: n // 2))
    add("truncated_end_record", "bad_zip", None, truncated(lambda n: n - 10))

    def corrupt_central(path: Path) -> Path:
        data = bytearray(write_zip(path, encode(base_files())).read_bytes())
        at = data.find(b"PK\x01\x02")
        data[at : at + 4] = b"XX\x01\x02"
        path.write_bytes(bytes(data))
        return path

    add("corrupt_central_directory", "bad_zip", None, corrupt_central)

    def corrupt_data(path: Path) -> Path:
        entries = [e for e in good if e.name != "sessions"]
        sessions = deflated("sessions", encode(base_files())["sessions"])
        payload = bytearray(sessions.payload)
        for i in range(10, min(len(payload), 40)):
            payload[i] ^= 0x5A
        sessions.payload = bytes(payload)
        return write_raw_zip(path, [*entries, sessions])

    add("corrupt_member_data", "bad_zip", "sessions", corrupt_data)

    def text_file(data: bytes) -> Callable[[Path], Path]:
        def build(path: Path) -> Path:
            path.write_bytes(data)
            return path

        return build

    add("not_a_zip", "not_a_zip", None, text_file(b"This is not a zip archive at all.\n" * 10))
    add("empty_file", "empty_archive", None, text_file(b""))
    add("no_event_file", "missing_file", "event",
        raw([e for e in good if e.name != "event"]))
    add("two_top_folders", "ambiguous_layout", None,
        raw([deflated(f"{top}/{e.name}", encode(base_files())[str(e.name)]) for top in ("a", "b") for e in good]))

    # --- invalid JSON ----------------------------------------------------------------------------------------
    for file in ("event", "microlocations", "sessions", "speakers", "sponsors", "tracks", "session_types", "forms",
                 "meta"):
        broken = b'{"id": 1,, "name": "x"}' if file in ("event", "meta") else b'[{"id": 1,, "name": "x"}'
        add(f"invalid_json_{file}", "invalid_json", file, replace(file, broken))
    add("invalid_utf8", "invalid_json", "sessions", replace("sessions", b'[{"id": 1, "title": "\xff\xfe"}]'))
    add("trailing_garbage", "invalid_json", "tracks", replace("tracks", b'[] {"more": true}'))
    add("nan_literal", "invalid_json", "microlocations", replace("microlocations", b'[{"id": 1, "floor": NaN}]'))
    add("empty_member", "invalid_json", "speakers", replace("speakers", b""))

    # --- wrong shapes ----------------------------------------------------------------------------------------
    add("event_is_array", "wrong_top_level_type", "event", replace("event", []))
    add("sessions_is_object", "wrong_top_level_type", "sessions", replace("sessions", {"id": 1}))
    add("speakers_is_string", "wrong_top_level_type", "speakers", replace("speakers", "speakers"))
    add("meta_is_array", "wrong_top_level_type", "meta", replace("meta", ["root_url"]))
    add("record_not_object", "wrong_type", "tracks", replace("tracks", [1, 2, 3]))
    add("huge_string", "string_too_long", "sessions",
        edit(lambda f: f["sessions"][0].update(title="x" * 5000)), ArchiveLimits(max_string_chars=1000))
    add("huge_key", "string_too_long", "speakers",
        edit(lambda f: f["speakers"][0].update({"k" * 5000: 1})), ArchiveLimits(max_string_chars=1000))
    add("deep_nesting_sessions", "too_deep", "sessions", replace("sessions", b"[" * 10_000 + b"]" * 10_000))
    add("deep_nesting_event", "too_deep", "event",
        replace("event", b'{"id": 1, "name": "x", "extra": ' + b"[" * 500 + b"]" * 500 + b"}"))
    add("too_many_records", "too_many_records", "sponsors",
        edit(lambda f: f.update(sponsors=[{"id": i, "name": f"S{i}"} for i in range(1, 12)])),
        ArchiveLimits(max_records=10))

    # --- ids -------------------------------------------------------------------------------------------------
    add("duplicate_session_ids", "duplicate_id", "sessions",
        edit(lambda f: f["sessions"][1].update(id=1)))
    add("duplicate_speaker_ids", "duplicate_id", "speakers",
        edit(lambda f: f["speakers"][1].update(id=1)))

    # (Two records sharing an id in a hand-made variant, with nothing to tell them apart, no longer fail: the
    # first is linked and the import reports it; tests/test_archive_tolerance.py.)
    add("id_as_string", "wrong_type", "sessions", edit(lambda f: f["sessions"][0].update(id="x")))
    add("id_missing", "missing_field", "tracks", edit(lambda f: f["tracks"][0].pop("id")))
    add("id_zero", "invalid_id", "microlocations", edit(lambda f: f["microlocations"][0].update(id=0)))
    add("id_too_large", "invalid_id", "speakers", edit(lambda f: f["speakers"][0].update(id=2**40)))
    add("id_float", "wrong_type", "session_types", edit(lambda f: f["session_types"][0].update(id=1.5)))
    add("id_bool", "wrong_type", "sponsors", edit(lambda f: f["sponsors"][0].update(id=True)))

    # --- relations -------------------------------------------------------------------------------------------
    add("unknown_track", "unknown_reference", "sessions",
        edit(lambda f: f["sessions"][0].update(track={"id": 99, "name": "Ghost"})))
    add("unknown_session_type", "unknown_reference", "sessions",
        edit(lambda f: f["sessions"][1].update(session_type={"id": 7, "length": 0.3, "name": "Ghost"})))
    add("unknown_microlocation", "unknown_reference", "sessions",
        edit(lambda f: f["sessions"][0].update(microlocation={"id": 42, "name": "Nowhere"})))
    add("unknown_speaker", "unknown_reference", "sessions",
        edit(lambda f: f["sessions"][0]["speakers"].append({"id": 77, "name": "Ghost", "organisation": None})))
    add("relation_not_object", "wrong_type", "sessions", edit(lambda f: f["sessions"][0].update(track="Main")))
    add("relation_without_id", "wrong_type", "sessions", edit(lambda f: f["sessions"][0].update(track={"name": "M"})))
    add("speakers_not_list", "wrong_type", "sessions", edit(lambda f: f["sessions"][0].update(speakers={"id": 1})))
    add("speaker_id_string", "wrong_type", "sessions",
        edit(lambda f: f["sessions"][0].update(speakers=[{"id": "x", "name": "Ada"}])))
    add("back_reference_not_list", "wrong_type", "speakers", edit(lambda f: f["speakers"][0].update(sessions=5)))

    def raw_column_unknown(files: dict[str, Any]) -> None:
        files["event"] = {"id": 1, "name": "Raw", "starts_at": "2024-05-01T07:00:00+00:00", "timezone": "UTC"}
        for session in files["sessions"]:
            for key in ("track", "session_type", "microlocation", "speakers"):
                session.pop(key)
            session["track_id"] = 1
        files["sessions"][1]["track_id"] = 5

    add("raw_column_unknown_track_id", "unknown_reference", "sessions", edit(raw_column_unknown))

    # --- required fields and types ---------------------------------------------------------------------------
    add("event_name_missing", "missing_field", "event", edit(lambda f: f["event"].pop("name")))
    add("event_name_null", "missing_field", "event", edit(lambda f: f["event"].update(name=None)))
    add("event_name_blank", "missing_field", "event", edit(lambda f: f["event"].update(name="   ")))
    add("event_name_number", "wrong_type", "event", edit(lambda f: f["event"].update(name=5)))
    add("session_title_missing", "missing_field", "sessions", edit(lambda f: f["sessions"][1].pop("title")))
    add("speaker_name_missing", "missing_field", "speakers", edit(lambda f: f["speakers"][0].update(name=None)))
    add("session_start_not_date", "invalid_datetime", "sessions",
        edit(lambda f: f["sessions"][0].update(start_time="tomorrow morning")))
    add("session_end_number", "wrong_type", "sessions", edit(lambda f: f["sessions"][0].update(end_time=1714550400)))
    add("event_start_not_date", "invalid_datetime", "event",
        edit(lambda f: f["event"].update(start_time="2024-13-45T99:00:00")))
    add("media_not_string", "wrong_type", "speakers", edit(lambda f: f["speakers"][0].update(photo=["a.jpg"])))
    add("social_links_not_list", "wrong_type", "event", edit(lambda f: f["event"].update(social_links="x")))
    add("timezone_not_string", "wrong_type", "event", edit(lambda f: f["event"].update(timezone=8)))
    add("session_type_length_object", "wrong_type", "session_types",
        edit(lambda f: f["session_types"][0].update(length={"minutes": 30})))
    return cases
