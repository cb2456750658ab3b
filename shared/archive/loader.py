"""Archive records -> database, losslessly.

Known fields go to columns and relations. For every record the loader then derives the record the exporter would
produce from exactly those values (``shared.archive.records.derive_record``) and stores the differences: source keys
whose value differs or that have no column go verbatim to ``extra_fields``, derived keys the source lacks go to
``absent_fields``, the position in the file goes to ``archive_order``. Exporting the event therefore reproduces the
source records.

Everything is written on the caller's connection inside its transaction; the caller commits or rolls back.

Sources stream: ``load_event`` reads a ``RecordSource`` (the archive reader, ``reader.EventArchive``) twice, first
into a compact ``SourceIndex`` (ids, the names nested snapshots show, relations), then record by record into
batched Core inserts. Memory holds the index and one batch, never a whole file.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession

from shared import child_stream
from shared.archive.legacy import normalize_value
from shared.archive.reader import open_archive, validate_archive
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
from shared.archive.safezip import ArchiveError, ArchiveLimits
from shared.built_ahead import built_ahead
from shared.bulk_insert import FAST_DIALECTS, PreparedRows, execute_prepared, insert_rows, prepare_rows
from shared.models.events import ROLE_ORGANIZER, EventRole

INT32_MAX = 2**31 - 1
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
    rows_built_in_child: bool = False  # load_event's rows_in_child, as it turned out


# ---------------------------------------------------------------------------------------------------- value helpers


def _valid_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT32_MAX:
        return value
    return None


def _to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return _parse_datetime(value)


@functools.lru_cache(maxsize=4096)  # an event's sessions share a few hundred distinct times
def _parse_datetime(value: str) -> datetime | None:
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
    # Loops rather than all(<generator>), and scalars compared in place: this runs for most values of every record.
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str or kind is int or kind is bool or a is None:
        return a == b
    if kind is float:
        return _float_same(a, b)
    if kind is dict:
        if len(a) != len(b) or (key_order_matters and list(a) != list(b)):
            return False
        for key, value in a.items():
            if key not in b:
                return False
            other = b[key]
            inner = type(value)
            if inner is not type(other):
                return False
            if inner is str or inner is int or inner is bool or value is None:
                if value != other:
                    return False
            elif not _equal(value, other, True):
                return False
        return True
    if kind is list:
        # Objects directly inside a list are key-sorted on output (one level), deeper levels are not.
        if len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):
            if not _equal(x, y, type(x) is not dict or key_order_matters):
                return False
        return True
    return json.dumps(normalize_value(a), ensure_ascii=False) == json.dumps(normalize_value(b), ensure_ascii=False)


def _same(a: Any, b: Any) -> bool:
    """Would both values of a record key serialize identically? (Top-level nested objects are key-sorted.)"""
    return _equal(a, b, False)


def bookkeeping(
    derived: Mapping[str, Any], source: Mapping[str, Any], remaps: Mapping[str, Mapping[int, int]] | None = None
) -> tuple[dict[str, Any] | None, list[str] | None]:
    """(extra_fields, absent_fields) that turn ``derived`` into ``source`` once the exporter applies them.

    ``remaps`` (``source_remaps``): the source's ids are compared, and kept in extras, as database ids."""
    extras = {}
    for key, value in source.items():
        if remaps is not None:
            mapping = remaps.get(key)
            if mapping is not None:
                value = _remap_value(value, mapping)
        mine = derived.get(key, _MISSING)
        kind = type(value)
        if kind is type(mine) and (kind is str or value is None or kind is int or kind is bool):  # the common case
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


def source_remaps(file: str, id_map: Mapping[str, Mapping[int, int]]) -> dict[str, Mapping[int, int]]:
    """Per key of a ``file`` record that holds ids, the map of its archive ids to database ids (own id, nested
    relation snapshots, flat *_id): what ``bookkeeping`` rewrites a source value with before comparing it."""
    return {"id": id_map.get(file, {}), "event_id": id_map.get("event", {}),
            **{key: id_map.get(target, {}) for key, target in _ID_KEYS.get(file, {}).items()}}


# ------------------------------------------------------------------------------------------------------ sources


class RecordSource(Protocol):
    """What the loader reads: the event object and, per array file, its records.

    ``records`` must give the same records each time it is called: the loader reads every file twice (an index of
    ids and names first, then the rows), so a streaming source never has to hold a whole file in memory.
    """

    def event(self) -> dict[str, Any]: ...

    def records(self, file: str) -> Iterable[Any]: ...


# ------------------------------------------------------------------------------------------------------ the loader

ProgressCallback = Callable[[str, int, int], None]
CHILD_MIN_ROWS = 3000  # rows from which load_event builds them in a child process (a fork costs milliseconds)
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


_BOOKKEEPING = frozenset({"extra_fields", "absent_fields"})


def _json_null(rows: Sequence[dict[str, Any]]) -> frozenset[str]:
    # Bookkeeping binds none_as_null: an empty value is SQL NULL (as for records made on the platform).
    return _BOOKKEEPING if rows and "extra_fields" in rows[0] else frozenset()


def _insert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """One batch on the driver's fast path (``shared/bulk_insert.py``)."""
    insert_rows(conn, table, rows, json_null=_json_null(rows))


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


class SourceIndexer:
    """Builds a ``SourceIndex`` from records handed in one at a time, per file in file order, the files in any
    order: the importer feeds it from the reader's validation pass instead of reading the archive once more."""

    def __init__(self) -> None:
        self.index = SourceIndex()
        self._problem: LoadError | None = None
        for file in LOADED_ARRAYS:
            self.index.src_ids[file] = []
            self.index.columns[file] = []

    def add(self, file: str, record: Any) -> None:
        index = self.index
        ids = index.src_ids.get(file)
        if ids is None:
            return  # not a file the loader writes
        if not isinstance(record, dict):
            if self._problem is None:
                self._problem = LoadError(f"record {len(ids)} is not a JSON object", file=file)
            ids.append(None)
            return
        ids.append(_valid_id(record.get("id")))
        names = _INDEXED_COLUMNS.get(file)
        if names:
            row = _coerce_row(TABLES[file], names, record)
            index.columns[file].append(tuple(row[name] for name in names))
        if file == "sessions":
            index.session_refs.append(tuple(_relation_id(record, key) for key, _ in _SESSION_RELATIONS))
            speakers = record.get("speakers")
            refs = (_valid_id(s.get("id")) if isinstance(s, dict) else None
                    for s in (speakers if isinstance(speakers, list) else ()))
            index.session_speakers.append(tuple(ref for ref in refs if ref is not None))

    def finish(self) -> SourceIndex:
        """The index; raises LoadError if a record was not a JSON object."""
        if self._problem is not None:
            raise self._problem
        return self.index


def index_source(source: RecordSource, visit: Callable[[str, Any], None] | None = None) -> SourceIndex:
    """Read every array file once and keep what the write pass needs; raises LoadError on a non-object record.

    ``visit(file, record)`` sees every record on the way.
    """
    indexer = SourceIndexer()
    for file in LOADED_ARRAYS:
        for record in source.records(file):
            if not isinstance(record, dict):
                indexer.add(file, record)
                indexer.finish()  # raises: a structural error before any write
            if visit is not None:
                visit(file, record)
            indexer.add(file, record)
    return indexer.finish()


def load_archive(
    db_session: OrmSession | Connection,
    path: Path | str,
    *,
    keep_ids: bool = True,
    owner_user_id: int | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
    strict: bool = False,
) -> LoadResult:
    """Load an archive folder or zip as one new event, in the caller's transaction (the caller commits).

    Read through the hardened reader, as an import is (safe-zip limits, variants, validation): its first problem
    comes back as a ``LoadError``. Media files are not loaded: media fields keep their archive paths.
    """
    try:
        with open_archive(path, limits, strict=strict) as archive:
            validate_archive(archive)
            return load_event(db_session, archive, keep_ids=keep_ids, owner_user_id=owner_user_id)
    except ArchiveError as exc:
        raise LoadError(exc.detail, file=exc.file, record_id=exc.record_id) from None


def load_event(
    db_session: OrmSession | Connection,
    source: RecordSource,
    *,
    keep_ids: bool = True,
    owner_user_id: int | None = None,
    index: SourceIndex | None = None,
    on_progress: ProgressCallback | None = None,
    rows_in_child: bool | None = False,
    rows_ahead: bool | None = None,
) -> LoadResult:
    """Write ``source`` as one new event on the caller's connection, inside its transaction (the caller commits).

    Records stream from the source in batches of ``BATCH_ROWS`` (driver fast paths), so memory holds the compact
    ``index`` (built here unless given) and one batch, never a whole file. ``on_progress("database", done, total)``
    is called after every batch.

    ``rows_in_child``: build the batches (columns, derived records, differences, driver values) in a forked child
    process while this one inserts them (``shared.child_stream``): the two take two cores, and the child's
    copied-on-write pages about as much memory again as the index. ``None``: from ``CHILD_MIN_ROWS`` rows on, where a
    fork pays for itself. The rows are the same either way.

    ``rows_ahead`` (when not in a child): build each batch on a native thread while the previous one is inserted
    (``shared.built_ahead``); it pays where the insert waits for the server outside the GIL. ``None``: on
    PostgreSQL (its ``COPY``), not on SQLite (binding holds the GIL).
    """
    load = _EventLoad(_connection(db_session), source, keep_ids, on_progress)
    event_src = load.event_source()
    if index is None:
        index = index_source(source)  # before any write: structural errors leave the database untouched
    load.insert_event(event_src)
    load.assign_ids(index)
    event_extras, event_absent = load.write_event_parts(event_src)
    if rows_in_child is None:
        rows_in_child = load.total >= CHILD_MIN_ROWS
    in_child = rows_in_child and child_stream.available() and load.conn.dialect.name in FAST_DIALECTS
    if rows_ahead is None:
        rows_ahead = load.conn.dialect.name == "postgresql"
    load.write_records(in_child, ahead=rows_ahead and not in_child)
    load.finish_event(event_extras, event_absent, owner_user_id)
    return LoadResult(event_id=load.event_id, id_map=load.id_map, counts=load.counts, rows_built_in_child=in_child)


class _EventLoad:
    """The steps of one ``load_event``, in order; each writes on ``conn`` and fills in what the next needs."""

    def __init__(self, conn: Connection, source: RecordSource, keep_ids: bool,
                 on_progress: ProgressCallback | None) -> None:
        self.conn, self.source, self.keep_ids, self.on_progress = conn, source, keep_ids, on_progress
        self.id_map: dict[str, dict[int, int]] = {}
        self.counts: dict[str, int] = {}
        self.db_ids: dict[str, list[int]] = {}
        self.link_records: list[dict[str, Any]] = []
        self.done = self.total = 0

    def event_source(self) -> dict[str, Any]:
        event_src = self.source.event()
        if not isinstance(event_src, dict):
            raise LoadError("expected a JSON object", file="event")
        event_src = dict(event_src)
        event_src.pop("creator", None)  # a user of the source server, not event data (the reference dropped it too)
        raw_links = event_src.get("social_links")
        self.link_records = [x for x in raw_links if isinstance(x, dict)] if isinstance(raw_links, list) else []
        return event_src

    def insert_event(self, event_src: dict[str, Any]) -> None:
        # Event first: on SQLite the first write takes the database lock (unless the caller began IMMEDIATE), so the
        # reads below (id allocation, identifier check) cannot race another import.
        conn, events = self.conn, TABLES["event"]
        event_row = _coerce_row(events, COLUMNS["event"][1:], event_src)
        identifier = event_row.pop("identifier")
        if event_row["name"] is None:
            event_row["name"] = ""  # NOT NULL column; the source value is kept through extras
        src_event_id = _valid_id(event_src.get("id"))
        if self.keep_ids and src_event_id is not None:
            _Ids(conn, events, "event", self.keep_ids).assign([src_event_id])  # raises if taken, moves the PG sequence
            event_id = src_event_id
            conn.execute(sa.insert(events).values(id=event_id, **event_row))
        else:
            event_id = conn.execute(sa.insert(events).values(**event_row).returning(events.c.id)).scalar_one()
        self.id_map["event"] = {src_event_id: event_id} if src_event_id is not None else {}
        if identifier is not None and conn.execute(
                sa.select(events.c.id).where(events.c.identifier == identifier)).first():
            identifier = None  # identifiers are unique: a re-import must not collide
        event_row.update(id=event_id, identifier=identifier)
        self.event_id, self.event_row, self.identifier = event_id, event_row, identifier
        self.counts["event"] = 1

    def assign_ids(self, index: SourceIndex) -> None:
        """Ids of every file, then the maps used to rewrite relations."""
        conn, keep_ids = self.conn, self.keep_ids
        self.db_ids["social_links"], self.id_map["social_links"] = _Ids(
            conn, SOCIAL_LINKS, "social_links", keep_ids).assign(
            [_valid_id(record.get("id")) for record in self.link_records]
        )
        for file in LOADED_ARRAYS:
            self.db_ids[file], self.id_map[file] = _Ids(conn, TABLES[file], file, keep_ids).assign(index.src_ids[file])
        # Kept ids map to themselves; only remapped or duplicated ids need the source rewritten before comparing.
        self.remap = any(old != new for mapping in self.id_map.values() for old, new in mapping.items())
        self.relations = _Relations(index, self.db_ids, self.id_map)
        self.total = sum(index.count(file) for file in LOADED_ARRAYS) + self.relations.link_count

    def progress(self, step: int) -> None:
        self.done += step
        if self.on_progress is not None:
            self.on_progress("database", self.done, self.total)

    def write_event_parts(self, event_src: dict[str, Any]) -> tuple[Any, Any]:
        """Social links and copyright; they are compared as part of the event record, whose differences return."""
        event_id = self.event_id
        link_rows = []
        for position, (record, db_id) in enumerate(zip(self.link_records, self.db_ids["social_links"], strict=True)):
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
            self.event_row,
            {
                "social_links": [nested_social_link(r["id"], r["link"], r["name"]) for r in link_rows],
                "copyright": nested_copyright(copyright_row),
            },
        )
        differences = bookkeeping(event_derived, event_src,
                                  source_remaps("event", self.id_map) if self.remap else None)
        if copyright_row is not None:
            _insert(self.conn, COPYRIGHTS, [copyright_row])
        _insert(self.conn, SOCIAL_LINKS, link_rows)
        self.counts["social_links"] = len(link_rows)
        return differences

    def write_records(self, in_child: bool, ahead: bool = False) -> None:
        """Every array file in ``WRITE_ORDER``, then the session-speaker links: batches built (here, on a thread
        one batch ahead, or in a child process) and inserted here, in order."""
        self.counts.update(dict.fromkeys((*WRITE_ORDER, "session_speakers"), 0))
        if in_child:
            batches = child_stream.stream_from_child(self.batches)
        elif ahead:
            batches = built_ahead(self.batches)
        else:
            batches = self.batches()
        try:
            for key, batch in batches:
                if isinstance(batch, PreparedRows):
                    execute_prepared(self.conn, batch)
                else:
                    _insert(self.conn, TABLES.get(key, SESSION_SPEAKERS), batch)
                self.counts[key] += len(batch)
                self.progress(len(batch))
        finally:
            batches.close()  # a failed insert stops the child now, not when the traceback is gone

    def batches(self) -> Iterator[tuple[str, PreparedRows | list[dict[str, Any]]]]:
        """(counts key, batch) of every row ``write_records`` inserts. Reads the source and computes, writes nothing:
        it may run in a child process."""
        for file in WRITE_ORDER:
            yield from self._file_batches(file)
        links: list[dict[str, int]] = []
        for link in self.relations.links():
            links.append(link)
            if len(links) >= BATCH_ROWS:
                yield "session_speakers", self._prepare(SESSION_SPEAKERS, links)
                links = []
        if links:
            yield "session_speakers", self._prepare(SESSION_SPEAKERS, links)

    def _prepare(self, table: sa.Table, rows: list[dict[str, Any]]) -> PreparedRows | list[dict[str, Any]]:
        dialect = self.conn.dialect
        if dialect.name not in FAST_DIALECTS:
            return rows
        return prepare_rows(dialect, table, rows, json_null=_json_null(rows))

    def _file_batches(self, file: str) -> Iterator[tuple[str, PreparedRows | list[dict[str, Any]]]]:
        """An array file, streamed a second time: the row, its derived record and the differences, in batches."""
        table, ids, names = TABLES[file], self.db_ids[file], COLUMNS[file][1:]
        batch: list[dict[str, Any]] = []
        read = 0
        remaps = source_remaps(file, self.id_map) if self.remap else None
        for position, record in enumerate(self.source.records(file)):
            if position >= len(ids) or not isinstance(record, dict):
                raise LoadError("the file changed while it was being read", file=file)
            row = _coerce_row(table, names, record)
            row.update(id=ids[position], event_id=self.event_id, archive_order=position)
            if file == "sessions":
                row.update(self.relations.session_columns(position))
            derived = derive_record(file, row, self.relations.of(file, position, row))
            row["extra_fields"], row["absent_fields"] = bookkeeping(derived, record, remaps)
            batch.append(row)
            read += 1
            if len(batch) >= BATCH_ROWS:
                yield file, self._prepare(table, batch)
                batch = []
        if batch:
            yield file, self._prepare(table, batch)
        if read != len(ids):
            raise LoadError("the file changed while it was being read", file=file)

    def finish_event(self, event_extras: Any, event_absent: Any, owner_user_id: int | None) -> None:
        events, identifier = TABLES["event"], self.identifier
        if event_extras or event_absent or identifier is not None:
            self.conn.execute(
                sa.update(events)
                .where(events.c.id == self.event_id)
                .values(
                    identifier=identifier,
                    extra_fields=sa.bindparam("x", event_extras, type_=sa.JSON(none_as_null=True)),
                    absent_fields=sa.bindparam("a", event_absent, type_=sa.JSON(none_as_null=True)),
                )
            )
        if owner_user_id is not None:
            self.conn.execute(
                sa.insert(EventRole.__table__).values(user_id=owner_user_id, event_id=self.event_id,
                                                      role=ROLE_ORGANIZER)
            )


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
