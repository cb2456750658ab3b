"""Legacy archive (folder or zip) -> database, losslessly.

Known fields go to columns and relations. For every record the loader then derives the record the exporter would
produce from exactly those values (``shared.archive.records.derive_record``) and stores the differences: source keys
whose value differs or that have no column go verbatim to ``extra_fields``, derived keys the source lacks go to
``absent_fields``, the position in the file goes to ``archive_order``. Exporting the event therefore reproduces the
source records.

Everything is written on the caller's connection inside its transaction; the caller commits or rolls back.

Sources stream: ``load_event`` reads a ``RecordSource`` (the importer's archive reader, or parsed files through
``ParsedSource``) twice, first into a compact ``SourceIndex`` (ids, the names nested snapshots show, relations), then
record by record into batched Core inserts. Memory holds the index and one batch, never a whole file.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession

from shared.archive.legacy import normalize_value
from shared.archive.records import (
    COLUMNS,
    COPYRIGHT_COLUMNS,
    COPYRIGHTS,
    SESSION_SPEAKERS,
    SOCIAL_LINKS,
    TABLES,
    derive_record,
    nested_copyright,
    nested_microlocation,
    nested_session,
    nested_session_type,
    nested_social_link,
    nested_speaker,
    nested_track,
)
from shared.models import ROLE_ORGANIZER, EventRole

INT32_MAX = 2**31 - 1
MAX_MEMBER_BYTES = 512 * 1024 * 1024

# Canonical file -> names it has been seen under (2016 archives used .json names and custom_forms).
FILE_NAMES: dict[str, tuple[str, ...]] = {
    "event": ("event", "event.json", "events", "events.json"),
    "microlocations": ("microlocations", "microlocations.json"),
    "sessions": ("sessions", "sessions.json"),
    "speakers": ("speakers", "speakers.json"),
    "sponsors": ("sponsors", "sponsors.json"),
    "tracks": ("tracks", "tracks.json"),
    "session_types": ("session_types", "session_types.json"),
    "forms": ("forms", "forms.json", "custom_forms", "custom_forms.json"),
    "social_links": ("social_links", "social_links.json"),
}
_SESSION_RELATIONS = (("track", "tracks"), ("session_type", "session_types"), ("microlocation", "microlocations"))
LOADED_ARRAYS = ("microlocations", "sessions", "speakers", "sponsors", "tracks", "session_types", "forms")

# Keys whose values embed ids of other files (remapped when ids change): key -> file the ids belong to.
_ID_KEYS: dict[str, dict[str, str]] = {
    "event": {"social_links": "social_links"},
    "sessions": {
        "track": "tracks",
        "session_type": "session_types",
        "microlocation": "microlocations",
        "speakers": "speakers",
        "track_id": "tracks",
        "session_type_id": "session_types",
        "microlocation_id": "microlocations",
    },
    "speakers": {"sessions": "sessions"},
    "tracks": {"sessions": "sessions"},
}


class LoadError(ValueError):
    """An archive the loader cannot take; the message names the file and record (``File sessions, ID 12: ...``)."""

    def __init__(self, message: str, *, file: str | None = None, record_id: Any = None) -> None:
        self.file = file
        self.record_id = record_id
        self.detail = message
        prefix = ""
        if file is not None:
            prefix = f"File {file}, ID {record_id}: " if record_id is not None else f"File {file}: "
        super().__init__(prefix + message)


@dataclass
class LoadResult:
    event_id: int
    id_map: dict[str, dict[int, int]] = field(default_factory=dict)  # file -> {archive id: database id}
    counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------- reading


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


# ---------------------------------------------------------------------------------------------------- value helpers


def _valid_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT32_MAX:
        return value
    return None


def _to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    # Naive wall time is the model's convention; an offset stays visible through extras.
    return parsed.replace(tzinfo=None)


def _to_int(value: Any) -> int | None:
    if type(value) is int and -INT32_MAX - 1 <= value <= INT32_MAX:
        return value
    return None


def _to_float(value: Any) -> float | None:
    if type(value) is float:
        if value == 0.0:
            return 0.0  # SQLite stores -0.0 as 0; the sign survives through extras instead
        return value if math.isfinite(value) else None
    if type(value) is int and abs(value) < 2**53:  # larger ints would not survive the float round trip anyway
        return float(value)
    return None


def _string_coercer(length: int | None) -> Callable[[Any], str | None]:
    def coerce(value: Any) -> str | None:
        if type(value) is not str or "\x00" in value:
            return None
        if length is not None and len(value) > length:
            return None
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates cannot be stored
                return None
        return value

    return coerce


def _coercer(column: sa.Column) -> Callable[[Any], Any]:
    """Turns an archive value into what the column can hold, or None (the verbatim value then goes to extras)."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return _to_datetime
    if isinstance(kind, sa.Integer):
        return _to_int
    if isinstance(kind, sa.Float):
        return _to_float
    if isinstance(kind, sa.String):
        return _string_coercer(kind.length)
    return lambda _value: None


_COERCERS: dict[tuple[str, tuple[str, ...]], list[tuple[str, Callable[[Any], Any]]]] = {}


def _coerce_row(table: sa.Table, names: Sequence[str], source: Mapping[str, Any]) -> dict[str, Any]:
    cache_key = (table.name, tuple(names))
    coercers = _COERCERS.get(cache_key)
    if coercers is None:
        coercers = _COERCERS[cache_key] = [(name, _coercer(table.c[name])) for name in names]
    get = source.get
    return {name: coerce(get(name)) for name, coerce in coercers}


_MISSING = object()


def _float_same(a: float, b: float) -> bool:
    return float.__repr__(a) == float.__repr__(b)  # 0.0 and -0.0 print differently


def _equal(a: Any, b: Any, key_order_matters: bool) -> bool:
    """Strict JSON equality: 1, 1.0, "1" and True all differ; dict key order counts when it shows in the output."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return _float_same(a, b)
    if kind is dict:
        if len(a) != len(b) or (key_order_matters and list(a) != list(b)):
            return False
        return all(key in b and _equal(value, b[key], True) for key, value in a.items())
    if kind is list:
        # Objects directly inside a list are key-sorted on output (one level), deeper levels are not.
        return len(a) == len(b) and all(
            _equal(x, y, type(x) is not dict or key_order_matters) for x, y in zip(a, b, strict=True)
        )
    if kind in (str, int, bool) or a is None:
        return a == b
    return json.dumps(normalize_value(a), ensure_ascii=False) == json.dumps(normalize_value(b), ensure_ascii=False)


def _same(a: Any, b: Any) -> bool:
    """Would both values of a record key serialize identically? (Top-level nested objects are key-sorted.)"""
    return _equal(a, b, False)


def bookkeeping(
    derived: Mapping[str, Any], source: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """(extra_fields, absent_fields) that turn ``derived`` into ``source`` once the exporter applies them."""
    extras = {}
    for key, value in source.items():
        mine = derived.get(key, _MISSING)
        kind = type(value)
        if kind is type(mine) and (kind is str or value is None):  # the common case, short-circuited
            if mine != value:
                extras[key] = value
        elif mine is _MISSING or not _same(mine, value):
            extras[key] = value
    absent = [key for key in derived if key not in source]
    return extras or None, absent or None


def _remap_value(value: Any, mapping: Mapping[int, int]) -> Any:
    if isinstance(value, dict):
        ref = _valid_id(value.get("id"))
        if ref is not None and mapping.get(ref, ref) != ref:
            return {k: (mapping[ref] if k == "id" else v) for k, v in value.items()}
        return value
    if isinstance(value, list):
        return [_remap_value(item, mapping) for item in value]
    ref = _valid_id(value)
    return mapping.get(ref, ref) if ref is not None else value


def remap_source(file: str, record: Mapping[str, Any], id_map: Mapping[str, Mapping[int, int]]) -> dict[str, Any]:
    """The source record with archive ids replaced by database ids (own id, nested relation snapshots, flat *_id)."""
    out = dict(record)
    if "id" in out:
        out["id"] = _remap_value(out["id"], id_map.get(file, {}))
    if "event_id" in out:
        out["event_id"] = _remap_value(out["event_id"], id_map.get("event", {}))
    for key, target in _ID_KEYS.get(file, {}).items():
        if key in out:
            out[key] = _remap_value(out[key], id_map.get(target, {}))
    return out


# ------------------------------------------------------------------------------------------------------ sources


class RecordSource(Protocol):
    """What the loader reads: the event object and, per array file, its records.

    ``records`` must give the same records each time it is called: the loader reads every file twice (an index of
    ids and names first, then the rows), so a streaming source never has to hold a whole file in memory.
    """

    def event(self) -> dict[str, Any]: ...

    def records(self, file: str) -> Iterable[Any]: ...


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


# ------------------------------------------------------------------------------------------------------ the loader

ProgressCallback = Callable[[str, int, int], None]
BATCH_ROWS = 1000  # rows per executemany: few round trips, small enough to keep memory flat
# Parents before children (sessions reference tracks, types, rooms; links reference sessions and speakers).
WRITE_ORDER = ("forms", "microlocations", "sponsors", "speakers", "tracks", "session_types", "sessions")
# Columns of other records that a record's derived form shows (nested snapshots), per file.
_INDEXED_COLUMNS: dict[str, tuple[str, ...]] = {
    "tracks": ("name",),
    "session_types": ("name", "length"),
    "microlocations": ("name",),
    "speakers": ("name", "organisation"),
    "sessions": ("title",),
}


def _connection(db: OrmSession | Connection) -> Connection:
    return db.connection() if isinstance(db, OrmSession) else db


def _insert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany (on PostgreSQL SQLAlchemy turns it into multi-row INSERTs)."""
    if not rows:
        return
    stmt = sa.insert(table)
    if "extra_fields" in rows[0]:
        # Bind bookkeeping with none_as_null so an empty value is SQL NULL (as for records made on the platform).
        stmt = stmt.values(
            extra_fields=sa.bindparam("extra_fields", type_=sa.JSON(none_as_null=True)),
            absent_fields=sa.bindparam("absent_fields", type_=sa.JSON(none_as_null=True)),
        )
    conn.execute(stmt, list(rows))


@dataclass
class SourceIndex:
    """Per record of every array file, only what other records' derived forms need: ids, names, relations.

    Compact (ids, and the titles and names that snapshots show): some 300 bytes per record, ~25 MB for an event of
    50,000 sessions and 25,000 speakers, where the records themselves would take well over ten times that.
    """

    src_ids: dict[str, list[int | None]] = field(default_factory=dict)
    columns: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    # per session: (track, session_type, microlocation) archive ids, and its speakers' archive ids in order
    session_refs: list[tuple[int | None, int | None, int | None]] = field(default_factory=list)
    session_speakers: list[tuple[int, ...]] = field(default_factory=list)

    def count(self, file: str) -> int:
        return len(self.src_ids.get(file, ()))


def _relation_id(record: Mapping[str, Any], key: str) -> int | None:
    ref = record.get(key)
    return _valid_id(ref.get("id")) if isinstance(ref, dict) else _valid_id(record.get(f"{key}_id"))


def index_source(source: RecordSource, visit: Callable[[str, Any], None] | None = None) -> SourceIndex:
    """Read every array file once and keep what the write pass needs; raises LoadError on a non-object record.

    ``visit(file, record)`` sees every record on the way (the importer plans media there: no extra read).
    """
    index = SourceIndex()
    for file in LOADED_ARRAYS:
        ids: list[int | None] = []
        index.src_ids[file] = ids
        names = _INDEXED_COLUMNS.get(file)
        values: list[tuple[Any, ...]] = []
        index.columns[file] = values
        table = TABLES[file]
        for position, record in enumerate(source.records(file)):
            if not isinstance(record, dict):
                raise LoadError(f"record {position} is not a JSON object", file=file)
            if visit is not None:
                visit(file, record)
            ids.append(_valid_id(record.get("id")))
            if names:
                row = _coerce_row(table, names, record)
                values.append(tuple(row[name] for name in names))
            if file == "sessions":
                index.session_refs.append(tuple(_relation_id(record, key) for key, _ in _SESSION_RELATIONS))
                speakers = record.get("speakers")
                refs = (_valid_id(s.get("id")) if isinstance(s, dict) else None
                        for s in (speakers if isinstance(speakers, list) else ()))
                index.session_speakers.append(tuple(ref for ref in refs if ref is not None))
    return index


def load_legacy_event(
    db_session: OrmSession | Connection,
    source: Path | str,
    *,
    keep_ids: bool = True,
    owner_user_id: int | None = None,
) -> LoadResult:
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


def load_event(
    db_session: OrmSession | Connection,
    source: RecordSource,
    *,
    keep_ids: bool = True,
    owner_user_id: int | None = None,
    index: SourceIndex | None = None,
    on_progress: ProgressCallback | None = None,
) -> LoadResult:
    """Write ``source`` as one new event on the caller's connection, inside its transaction (the caller commits).

    Records stream from the source in batches of ``BATCH_ROWS`` (Core executemany), so memory holds the compact
    ``index`` (built here unless given) and one batch, never a whole file. ``on_progress("database", done, total)``
    is called after every batch.
    """
    conn = _connection(db_session)
    event_src = source.event()
    if not isinstance(event_src, dict):
        raise LoadError("expected a JSON object", file="event")
    event_src = dict(event_src)
    event_src.pop("creator", None)  # a user of the source server, not event data (the reference dropped it too)
    raw_links = event_src.get("social_links")
    link_records = [x for x in raw_links if isinstance(x, dict)] if isinstance(raw_links, list) else []
    if index is None:
        index = index_source(source)  # before any write: structural errors leave the database untouched

    id_map: dict[str, dict[int, int]] = {}
    counts: dict[str, int] = {}

    # Event first: on SQLite the first write takes the database lock (unless the caller began IMMEDIATE), so the
    # reads below (id allocation, identifier check) cannot race another import.
    events = TABLES["event"]
    event_row = _coerce_row(events, COLUMNS["event"][1:], event_src)
    identifier = event_row.pop("identifier")
    if event_row["name"] is None:
        event_row["name"] = ""  # NOT NULL column; the source value is kept through extras
    src_event_id = _valid_id(event_src.get("id"))
    if keep_ids and src_event_id is not None:
        _Ids(conn, events, "event", keep_ids).assign([src_event_id])  # raises if taken, moves the PG sequence
        event_id = src_event_id
        conn.execute(sa.insert(events).values(id=event_id, **event_row))
    else:
        event_id = conn.execute(sa.insert(events).values(**event_row).returning(events.c.id)).scalar_one()
    id_map["event"] = {src_event_id: event_id} if src_event_id is not None else {}
    if identifier is not None and conn.execute(sa.select(events.c.id).where(events.c.identifier == identifier)).first():
        identifier = None  # identifiers are unique: a re-import must not collide
    event_row.update(id=event_id, identifier=identifier)
    counts["event"] = 1

    # Ids of every file, then the maps used to rewrite relations.
    db_ids: dict[str, list[int]] = {}
    db_ids["social_links"], id_map["social_links"] = _Ids(conn, SOCIAL_LINKS, "social_links", keep_ids).assign(
        [_valid_id(record.get("id")) for record in link_records]
    )
    for file in LOADED_ARRAYS:
        db_ids[file], id_map[file] = _Ids(conn, TABLES[file], file, keep_ids).assign(index.src_ids[file])
    # Kept ids map to themselves; only remapped or duplicated ids need the source rewritten before comparing.
    remap = any(old != new for mapping in id_map.values() for old, new in mapping.items())

    relations = _Relations(index, db_ids, id_map)
    total = sum(index.count(file) for file in LOADED_ARRAYS) + relations.link_count
    done = 0

    def progress(step: int) -> None:
        nonlocal done
        done += step
        if on_progress is not None:
            on_progress("database", done, total)

    # Event: social links and copyright are compared as part of the event record.
    link_rows = []
    for position, (record, db_id) in enumerate(zip(link_records, db_ids["social_links"], strict=True)):
        row = _coerce_row(SOCIAL_LINKS, ("name", "link"), record)
        row.update(id=db_id, event_id=event_id, archive_order=position, extra_fields=None, absent_fields=None)
        link_rows.append(row)
    copyright_src = event_src.get("copyright")
    copyright_row = None
    if isinstance(copyright_src, dict):
        copyright_row = _coerce_row(COPYRIGHTS, COPYRIGHT_COLUMNS, copyright_src)
        copyright_row["event_id"] = event_id
    event_derived = derive_record(
        "event",
        event_row,
        {
            "social_links": [nested_social_link(r["id"], r["link"], r["name"]) for r in link_rows],
            "copyright": nested_copyright(copyright_row),
        },
    )
    event_source = remap_source("event", event_src, id_map) if remap else event_src
    event_extras, event_absent = bookkeeping(event_derived, event_source)
    if copyright_row is not None:
        _insert(conn, COPYRIGHTS, [copyright_row])
    _insert(conn, SOCIAL_LINKS, link_rows)
    counts["social_links"] = len(link_rows)

    # Every array file, streamed a second time: the row, its derived record and the differences, in batches.
    for file in WRITE_ORDER:
        table, ids, names = TABLES[file], db_ids[file], COLUMNS[file][1:]
        batch: list[dict[str, Any]] = []
        written = 0
        for position, record in enumerate(source.records(file)):
            if position >= len(ids) or not isinstance(record, dict):
                raise LoadError("the file changed while it was being read", file=file)
            row = _coerce_row(table, names, record)
            row.update(id=ids[position], event_id=event_id, archive_order=position)
            if file == "sessions":
                row.update(relations.session_columns(position))
            derived = derive_record(file, row, relations.of(file, position, row))
            compared = remap_source(file, record, id_map) if remap else record
            row["extra_fields"], row["absent_fields"] = bookkeeping(derived, compared)
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                _insert(conn, table, batch)
                written += len(batch)
                progress(len(batch))
                batch = []
        _insert(conn, table, batch)
        written += len(batch)
        progress(len(batch))
        if written != len(ids):
            raise LoadError("the file changed while it was being read", file=file)
        counts[file] = written
    links: list[dict[str, int]] = []
    for link in relations.links():
        links.append(link)
        if len(links) >= BATCH_ROWS:
            _insert(conn, SESSION_SPEAKERS, links)
            progress(len(links))
            links = []
    _insert(conn, SESSION_SPEAKERS, links)
    progress(len(links))
    counts["session_speakers"] = relations.link_count

    if event_extras or event_absent or identifier is not None:
        conn.execute(
            sa.update(events)
            .where(events.c.id == event_id)
            .values(
                identifier=identifier,
                extra_fields=sa.bindparam("x", event_extras, type_=sa.JSON(none_as_null=True)),
                absent_fields=sa.bindparam("a", event_absent, type_=sa.JSON(none_as_null=True)),
            )
        )
    if owner_user_id is not None:
        conn.execute(
            sa.insert(EventRole.__table__).values(user_id=owner_user_id, event_id=event_id, role=ROLE_ORGANIZER)
        )
    return LoadResult(event_id=event_id, id_map=id_map, counts=counts)


class _Relations:
    """Relations resolved through the id maps, and the nested snapshots the exporter will derive from them.

    Kept lean for large events: what a session links to is resolved again whenever it is asked for, and the
    sessions of a speaker or track are kept as positions in the sessions file, not as snapshot objects.
    """

    def __init__(self, index: SourceIndex, db_ids: Mapping[str, list[int]], id_map: Mapping[str, dict[int, int]]):
        def by_db_id(file: str) -> dict[int, tuple[Any, ...]]:
            return dict(zip(db_ids[file], index.columns[file], strict=True))

        self.index, self.id_map = index, id_map
        self.tracks, self.types = by_db_id("tracks"), by_db_id("session_types")
        self.micros, self.speakers = by_db_id("microlocations"), by_db_id("speakers")
        self.session_ids = db_ids["sessions"]
        self._targets = [id_map[target] for _, target in _SESSION_RELATIONS]
        self.speaker_sessions: dict[int, list[int]] = {}
        self.track_sessions: dict[int, list[int]] = {}
        self.link_count = 0
        for position in range(len(self.session_ids)):
            for speaker_id in self.speakers_of(position):
                self.speaker_sessions.setdefault(speaker_id, []).append(position)
                self.link_count += 1
            track_id = self.session_columns(position)["track_id"]
            if track_id is not None:
                self.track_sessions.setdefault(track_id, []).append(position)

    def session_columns(self, position: int) -> dict[str, int | None]:
        track, stype, micro = (None if ref is None else mapping.get(ref)
                               for ref, mapping in zip(self.index.session_refs[position], self._targets, strict=True))
        return {"track_id": track, "session_type_id": stype, "microlocation_id": micro}

    def speakers_of(self, position: int) -> list[int]:
        """Database ids of the session's speakers, in its order, each once; unknown ones dropped."""
        speakers = self.id_map["speakers"]
        # A dict keeps the order and dedupes in linear time (a list's `in` made one long session quadratic).
        linked = dict.fromkeys(speakers.get(ref) for ref in self.index.session_speakers[position])
        linked.pop(None, None)
        return list(linked)  # type: ignore[arg-type]

    def links(self) -> Iterator[dict[str, int]]:
        for position, session_id in enumerate(self.session_ids):
            for order, speaker_id in enumerate(self.speakers_of(position)):
                yield {"session_id": session_id, "speaker_id": speaker_id, "position": order}

    def _sessions(self, positions: list[int] | None) -> list[dict[str, Any]]:
        titles = self.index.columns["sessions"]
        return [nested_session(self.session_ids[p], titles[p][0]) for p in positions or ()]

    def of(self, file: str, position: int, row: Mapping[str, Any]) -> dict[str, Any] | None:
        if file == "sessions":
            track, stype, micro = (self.tracks.get(row["track_id"]), self.types.get(row["session_type_id"]),
                                   self.micros.get(row["microlocation_id"]))
            return {
                "track": nested_track(row["track_id"], track[0]) if track else None,
                "session_type": nested_session_type(row["session_type_id"], *stype) if stype else None,
                "microlocation": nested_microlocation(row["microlocation_id"], micro[0]) if micro else None,
                "speakers": [nested_speaker(s, *self.speakers[s]) for s in self.speakers_of(position)],
            }
        if file == "speakers":
            return {"sessions": self._sessions(self.speaker_sessions.get(row["id"]))}
        if file == "tracks":
            return {"sessions": self._sessions(self.track_sessions.get(row["id"]))}
        return None


class _Ids:
    """Database ids of one file's records: the archive ids when kept, fresh ones otherwise."""

    def __init__(self, conn: Connection, table: sa.Table, file: str, keep_ids: bool) -> None:
        self.conn, self.table, self.file, self.keep_ids = conn, table, file, keep_ids
        self.is_pg = conn.dialect.name == "postgresql"

    def assign(self, src_ids: Sequence[int | None]) -> tuple[list[int], dict[int, int]]:
        """One database id per record, and the map archive id -> database id (first record wins on duplicates)."""
        wanted: list[int | None] = []
        mapping: dict[int, int] = {}
        for src in src_ids:
            if self.keep_ids and src is not None and src not in mapping:
                mapping[src] = src
                wanted.append(src)
            else:
                wanted.append(None)
        explicit = sorted(mapping)
        if explicit:
            self._check_free(explicit)
            self._reserve(explicit[-1])
        fresh = iter(self._fresh(sum(1 for w in wanted if w is None), explicit[-1] if explicit else 0))
        ids = [w if w is not None else next(fresh) for w in wanted]
        for src, db_id in zip(src_ids, ids, strict=True):
            if src is not None and src not in mapping:
                mapping[src] = db_id
        return ids, mapping

    def _check_free(self, ids: Sequence[int]) -> None:
        column = self.table.c.id
        for start in range(0, len(ids), 500):
            taken = self.conn.execute(sa.select(column).where(column.in_(ids[start : start + 500]))).first()
            if taken is not None:
                raise LoadError(
                    "id already exists in the database (import without keeping ids)", file=self.file, record_id=taken[0]
                )

    def _sequence(self) -> str:
        return f"pg_get_serial_sequence('{self.table.name}', 'id')"

    def _reserve(self, upto: int) -> None:
        # Explicit ids bypass the PostgreSQL sequence; move it past them (never backwards) so later inserts fit.
        if self.is_pg:
            seq = self._sequence()
            self.conn.execute(sa.text(f"SELECT setval({seq}, GREATEST(:upto, nextval({seq})))"), {"upto": upto})

    def _fresh(self, count: int, floor: int) -> list[int]:
        if count == 0:
            return []
        top = self.conn.execute(sa.select(sa.func.max(self.table.c.id))).scalar() or 0
        if self.is_pg:
            # A sequence can lag behind rows inserted with explicit ids elsewhere: never hand out a taken id.
            self._reserve(max(top, floor))
            rows = self.conn.execute(
                sa.text(f"SELECT nextval({self._sequence()}) FROM generate_series(1, :n)"), {"n": count}
            )
            return [row[0] for row in rows]
        # SQLite (and others): ids after the current maximum; our writes hold the database lock from the first insert.
        start = max(top, floor) + 1
        return list(range(start, start + count))
