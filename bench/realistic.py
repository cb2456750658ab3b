"""Realistic benchmark events, and the two floors every figure is compared with.

    python -m bench.realistic 50000 /tmp/fossasia50k.zip [--media]

The event is FOSSASIA16's real records (``../shared/samples`` or ``SAMPLES_DIR``) cycled to N sessions: copy k of
the sample's sessions and speakers gets fresh ids, its sessions point at copy k's speakers, and the back references
(a speaker's and a track's sessions) are rebuilt from the sessions so both directions agree. Tracks, rooms, session
types, sponsors and forms are the sample's own, once. Real text deflates about 3:1, unlike a generator's repeated
sentence (30:1), so the cost of deflate is measured as it will be paid. Media values are nulled unless ``media``
is asked for; then the sample's ``images`` folder goes into the archive and the records keep their paths.

Floors (single-threaded, no services, and neither uses the project's archive reader or writer):

* import floor: inflate and ``json.loads`` every file of the zip, then one ``sqlite3`` transaction of
  ``executemany`` inserts of the same rows (scalar fields as columns, references as ids, the session-speaker link
  table included) into a new database file;
* export floor: ``json.dumps(indent=4)`` of the same files, then zlib deflate at level 6 (output counted, dropped).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sqlite3
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.archive.legacy import MEDIA_FIELDS

REPO = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(os.environ.get("SAMPLES_DIR", REPO.parent / "shared" / "samples")).resolve()
SAMPLE = SAMPLES_DIR / "open_event" / "legacy" / "FOSSASIA16"
# Order of the legacy archive's members (as Open Event wrote them); ``meta`` last.
MEMBERS = ("event", "microlocations", "sessions", "speakers", "sponsors", "tracks", "session_types", "forms", "meta")
DEFLATE_LEVEL = 6


@dataclass
class Archive:
    path: Path
    sessions: int
    speakers: int
    links: int
    zip_bytes: int
    json_bytes: int
    counts: dict[str, int]


def load_sample(folder: Path = SAMPLE) -> dict[str, Any]:
    if not folder.is_dir():
        raise SystemExit(f"sample not found at {folder} (set SAMPLES_DIR)")
    return {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in MEMBERS}


def _strip_media(files: dict[str, Any]) -> None:
    for field in MEDIA_FIELDS:
        records = [files[field.file]] if isinstance(files[field.file], dict) else files[field.file]
        for record in records:
            if field.field in record:
                record[field.field] = None


def cycle_event(sample: dict[str, Any], sessions: int, *, media: bool = False) -> dict[str, Any]:
    """The sample's files with ``sessions`` sessions (and proportionately many speakers), relations consistent."""
    if sessions < 1:
        raise ValueError("sessions must be positive")
    base_sessions = sample["sessions"]
    base_speakers = sample["speakers"]
    out_sessions: list[dict[str, Any]] = []
    out_speakers: list[dict[str, Any]] = []
    next_session = next_speaker = 1
    copy_no = 0
    while len(out_sessions) < sessions:
        wanted = base_sessions[: sessions - len(out_sessions)]
        speaker_ids: dict[int, int] = {}
        used = {sp["id"] for s in wanted for sp in s.get("speakers") or ()}
        full = len(wanted) == len(base_sessions)
        # A partial last copy keeps only the speakers its sessions name, so none is left without a session it had.
        for speaker in base_speakers:
            if full or speaker["id"] in used:
                new = copy.deepcopy(speaker)
                speaker_ids[speaker["id"]] = new["id"] = next_speaker
                next_speaker += 1
                if copy_no:
                    new["email"] = _suffixed_email(new.get("email"), copy_no)
                new["sessions"] = []
                out_speakers.append(new)
        for session in wanted:
            new = copy.deepcopy(session)
            new["id"] = next_session
            next_session += 1
            new["speakers"] = [dict(sp, id=speaker_ids[sp["id"]]) for sp in session.get("speakers") or ()
                               if sp["id"] in speaker_ids]
            out_sessions.append(new)
        copy_no += 1

    by_speaker = {s["id"]: s for s in out_speakers}
    tracks = copy.deepcopy(sample["tracks"])
    by_track = {t["id"]: t for t in tracks}
    for t in tracks:
        t["sessions"] = []
    for s in out_sessions:
        ref = {"id": s["id"], "title": s["title"]}
        for sp in s["speakers"]:
            by_speaker[sp["id"]]["sessions"].append(ref)
        if s.get("track") and s["track"].get("id") in by_track:
            by_track[s["track"]["id"]]["sessions"].append(ref)

    files = {name: copy.deepcopy(sample[name]) for name in MEMBERS}
    files.update(sessions=out_sessions, speakers=out_speakers, tracks=tracks)
    if not media:
        _strip_media(files)
    return files


def _suffixed_email(email: Any, copy_no: int) -> Any:
    if isinstance(email, str) and "@" in email:
        local, domain = email.split("@", 1)
        return f"{local}+{copy_no}@{domain}"
    return email


def file_bytes(files: dict[str, Any]) -> dict[str, bytes]:
    return {name: json.dumps(files[name], indent=4, ensure_ascii=False).encode("utf-8") for name in MEMBERS}


def write_archive(files: dict[str, Any], target: Path, *, media: bool = False, sample: Path = SAMPLE) -> Archive:
    """``files`` as an Open Event legacy zip (deflate level 6), with the sample's images when ``media``."""
    encoded = file_bytes(files)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL) as archive:
        for name in MEMBERS:
            archive.writestr(name, encoded[name])
        if media:
            for path in sorted((sample / "images").rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(sample).as_posix())
    links = sum(len(s["speakers"]) for s in files["sessions"])
    counts = {name: len(files[name]) for name in MEMBERS if isinstance(files[name], list)}
    return Archive(target, len(files["sessions"]), len(files["speakers"]), links, target.stat().st_size,
                   sum(len(b) for b in encoded.values()), counts)


def make_archive(sessions: int, target: Path, *, media: bool = False) -> Archive:
    return write_archive(cycle_event(load_sample(), sessions, media=media), target, media=media)


# ----------------------------------------------------------------------------------------------------------- floors

_TABLES = ("event", "microlocations", "session_types", "tracks", "sponsors", "speakers", "sessions")
_REFERENCES = ("track", "microlocation", "session_type")


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else json.dumps(value)


def _rows(name: str, records: Iterable[dict[str, Any]], columns: list[str]) -> list[tuple]:
    if name == "sessions":
        return [tuple((r.get(c[:-3]) or {}).get("id") if c[:-3] in _REFERENCES and c.endswith("_id")
                      else _scalar(r.get(c)) for c in columns) for r in records]
    return [tuple(_scalar(r.get(c)) for c in columns) for r in records]


def _columns(name: str, records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for key in r:
            if name == "sessions" and key in _REFERENCES:
                seen[f"{key}_id"] = None
            elif key not in ("sessions", "speakers", "social_links"):
                seen[key] = None
    return list(seen)


def import_floor(zip_path: Path, db_path: Path) -> float:
    """Seconds to inflate and parse every file and insert its rows in one sqlite3 transaction."""
    started = time.perf_counter()
    with zipfile.ZipFile(zip_path) as archive:
        files = {name: json.loads(archive.read(name)) for name in MEMBERS}
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for name in _TABLES:
            records = [files[name]] if isinstance(files[name], dict) else files[name]
            columns = _columns(name, records)
            conn.execute(f'CREATE TABLE "{name}" (pk INTEGER PRIMARY KEY, '
                         + ", ".join(f'"{c}"' for c in columns) + ")")
            conn.executemany(f'INSERT INTO "{name}" ({", ".join(repr(c) for c in columns)}) VALUES '
                             f'({", ".join("?" * len(columns))})', _rows(name, records, columns))
        conn.execute("CREATE TABLE session_speakers (session_id INTEGER, speaker_id INTEGER, position INTEGER)")
        conn.executemany("INSERT INTO session_speakers VALUES (?, ?, ?)",
                         [(s["id"], sp["id"], i) for s in files["sessions"] for i, sp in enumerate(s["speakers"])])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def export_floor(files: dict[str, Any]) -> tuple[float, int]:
    """Seconds to serialise every file with ``indent=4`` and deflate it at level 6; and the deflated size."""
    started = time.perf_counter()
    size = 0
    for name in MEMBERS:
        data = json.dumps(files[name], indent=4, ensure_ascii=False).encode("utf-8")
        deflater = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        size += len(deflater.compress(data)) + len(deflater.flush())
    return time.perf_counter() - started, size


def read_files(zip_path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(zip_path) as archive:
        return {name: json.loads(archive.read(name)) for name in MEMBERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realistic", description=__doc__.split("\n\n")[0])
    parser.add_argument("sessions", type=int)
    parser.add_argument("target", type=Path)
    parser.add_argument("--media", action="store_true", help="keep media paths and add the sample's images")
    parser.add_argument("--floors", action="store_true", help="also measure both floors on the archive")
    args = parser.parse_args(argv)
    archive = make_archive(args.sessions, args.target, media=args.media)
    print(f"{archive.path}: {archive.sessions:,} sessions, {archive.speakers:,} speakers, {archive.links:,} links, "
          f"{archive.zip_bytes / 1e6:.2f} MB zip of {archive.json_bytes / 1e6:.2f} MB JSON "
          f"({archive.json_bytes / archive.zip_bytes:.1f}:1)")
    if args.floors:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"import floor {import_floor(args.target, Path(tmp) / 'floor.db'):.3f} s")
        seconds, _ = export_floor(read_files(args.target))
        print(f"export floor {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
