"""Database rows -> legacy archive records, streamed.

A record is derived from the model columns (datetimes formatted) and relations, then the row's ``extra_fields``
override keys, ``absent_fields`` are dropped, and the keys are put in format order (see ``shared/models/events.py``).

Export reads with SQLAlchemy Core and server-side cursors; relation lists (session speakers, speaker and track
sessions) come from a second query sorted like the main one and are merge-joined, so memory does not grow with the
event. Only the small lookup tables (tracks, session types, microlocations) are held in dicts.

The derivation helpers (``derive_record`` and the ``nested_*`` builders) are also used by the loader, so that what it
stores as extras is computed by exactly the rules the exporter applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession

from shared.archive.legacy import (
    ARRAY_FILES,
    LEADING_FIELDS,
    dump_object,
    format_datetime,
    iter_array_text,
    nested_session_type_length,
    normalize_value,
    order_record,
)
from shared.models.events import (
    CustomForm,
    Event,
    EventCopyright,
    Microlocation,
    Session,
    SessionSpeaker,
    SessionType,
    SocialLink,
    Speaker,
    Sponsor,
    Track,
)

YIELD_PER = 500  # rows per fetch: bounds the buffered rows, large enough to keep round trips few

# Archive file -> table holding its records.
TABLES: dict[str, sa.Table] = {
    "event": Event.__table__,
    "microlocations": Microlocation.__table__,
    "sessions": Session.__table__,
    "speakers": Speaker.__table__,
    "sponsors": Sponsor.__table__,
    "tracks": Track.__table__,
    "session_types": SessionType.__table__,
    "forms": CustomForm.__table__,
}
SOCIAL_LINKS = SocialLink.__table__
COPYRIGHTS = EventCopyright.__table__
SESSION_SPEAKERS = SessionSpeaker.__table__

# Keys derived from relations rather than columns.
RELATIONS: dict[str, tuple[str, ...]] = {
    "event": ("social_links", "copyright"),
    "sessions": ("session_type", "track", "microlocation", "speakers"),
    "speakers": ("sessions",),
    "tracks": ("sessions",),
}
# Columns that are archive keys of the same name, per file (the standard field set of a record): the format's leading
# fields that are not relations, then the keys the platform's records carry beyond them.
_MORE_COLUMNS: dict[str, tuple[str, ...]] = {
    "event": ("email", "identifier", "state"),
    "microlocations": ("latitude", "longitude", "room"),
    "sessions": ("level", "signup_url", "state"),
    "speakers": ("city", "gender"),
    "tracks": ("description", "location", "track_image_url"),
    "forms": ("id", "session_form", "speaker_form"),
}
COLUMNS: dict[str, tuple[str, ...]] = {
    file: tuple(key for key in LEADING_FIELDS[file] if key not in RELATIONS.get(file, ())) + _MORE_COLUMNS.get(file, ())
    for file in TABLES
}
COPYRIGHT_COLUMNS: tuple[str, ...] = ("holder", "holder_url", "licence", "licence_url", "logo", "year")
_BOOKKEEPING = ("extra_fields", "absent_fields")
# Columns holding datetimes, formatted as naive wall time in records.
_DATETIME_COLUMNS: dict[str, tuple[str, ...]] = {
    file: tuple(name for name in names if isinstance(TABLES[file].c[name].type, sa.DateTime))
    for file, names in COLUMNS.items()
}


# ----------------------------------------------------------------------------------------------- derivation (pure)


def nested_track(track_id: int, name: str | None) -> dict[str, Any]:
    return {"id": track_id, "name": name}


def nested_session_type(type_id: int, name: str | None, length: str | None) -> dict[str, Any]:
    return {"id": type_id, "length": nested_session_type_length(length), "name": name}


def nested_microlocation(micro_id: int, name: str | None) -> dict[str, Any]:
    return {"id": micro_id, "name": name}


def nested_speaker(speaker_id: int, name: str | None, organisation: str | None) -> dict[str, Any]:
    return {"id": speaker_id, "name": name, "organisation": organisation}


def nested_session(session_id: int, title: str | None) -> dict[str, Any]:
    return {"id": session_id, "title": title}


def nested_social_link(link_id: int, link: str | None, name: str | None) -> dict[str, Any]:
    return {"id": link_id, "link": link, "name": name}


def nested_copyright(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {key: row[key] for key in COPYRIGHT_COLUMNS}


def derive_record(file: str, row: Mapping[str, Any], relations: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The standard record of ``file`` from column values and already built relation values."""
    record = {key: row[key] for key in COLUMNS[file]}
    for key in _DATETIME_COLUMNS.get(file, ()):
        value = record[key]
        if isinstance(value, datetime):
            record[key] = format_datetime(value)
    if relations:
        for key in RELATIONS.get(file, ()):
            record[key] = relations.get(key)
    return record


def finish_record(
    file: str,
    derived: dict[str, Any],
    extra_fields: Mapping[str, Any] | None,
    absent_fields: Iterable[str] | None,
) -> dict[str, Any]:
    """Apply the row's archive bookkeeping, then put keys in format order."""
    if not extra_fields and not absent_fields and len(derived) == len(_STANDARD_ORDER[file]):
        # Platform records: the key set is the standard one and nested builders already emit sorted keys.
        return {key: derived[key] for key in _STANDARD_ORDER[file]}
    if extra_fields:
        derived.update(extra_fields)
    if absent_fields:
        for key in absent_fields:
            derived.pop(key, None)
    # The key order depends on the key set only, and imported records share a few key sets: order_record's result
    # reused. Derived values are flat or come from the nested builders (already sorted); only extras need sorting.
    record = {key: derived[key] for key in _key_order(file, tuple(derived))}
    if extra_fields:
        for key, value in extra_fields.items():
            if key in record and isinstance(value, (dict, list)):
                record[key] = normalize_value(value)
    return record


_KEY_ORDERS: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
_KEY_ORDERS_MAX = 4096


def _key_order(file: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    order = _KEY_ORDERS.get((file, keys))
    if order is None:
        order = tuple(order_record(file, dict.fromkeys(keys)))
        if len(_KEY_ORDERS) < _KEY_ORDERS_MAX:
            _KEY_ORDERS[file, keys] = order
    return order


# Key order of a record carrying exactly the standard field set.
_STANDARD_ORDER: dict[str, tuple[str, ...]] = {
    file: tuple(order_record(file, dict.fromkeys(COLUMNS[file] + RELATIONS.get(file, ())))) for file in COLUMNS
}


# ------------------------------------------------------------------------------------------------------ db helpers


def _connection(db: OrmSession | Connection) -> Connection:
    return db.connection() if isinstance(db, OrmSession) else db


def order_key(table: sa.Table) -> tuple[Any, ...]:
    """File order of a table's records: archive_order (NULLS LAST), then id."""
    return (table.c.archive_order.asc().nulls_last(), table.c.id.asc())


def _stream(conn: Connection, stmt: sa.Select) -> sa.CursorResult:
    # yield_per turns on server-side cursors on PostgreSQL; SQLite cursors are lazy anyway.
    # Set on the statement: Connection.execution_options would change the caller's connection in place.
    return conn.execute(stmt.execution_options(yield_per=YIELD_PER))


def _columns(table: sa.Table, names: Sequence[str]) -> list[sa.ColumnElement]:
    # The bookkeeping columns come as their JSON text (parsed by _bookkeeping): most rows share a few values.
    return [sa.cast(table.c[name], sa.Text).label(name) if name in _BOOKKEEPING else table.c[name] for name in names]


_PARSED: dict[str, Any] = {}
_PARSED_MAX = 4096


def _parsed(text: str | None) -> Any:
    # Parsed values are shared between records: nothing downstream mutates them (finish_record copies).
    if text is None:
        return None
    value = _PARSED.get(text)
    if value is None:
        value = json.loads(text)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[text] = value
    return value


def _finish(file: str, derived: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    return finish_record(file, derived, _parsed(values["extra_fields"]), _parsed(values["absent_fields"]))


def _groups(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, list[Sequence[Any]]]]:
    """Consecutive rows grouped by their first column."""
    key: Any = None
    bucket: list[Sequence[Any]] = []
    for row in rows:
        if bucket and row[0] != key:
            yield key, bucket
            bucket = []
        key = row[0]
        bucket.append(row)
    if bucket:
        yield key, bucket


class _MergeJoin:
    """Hands out, for each parent id in stream order, the child rows of a query sorted the same way."""

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self._groups = _groups(rows)
        self._pending = next(self._groups, None)

    def take(self, parent_id: int) -> list[Sequence[Any]]:
        # Both streams follow the same order key, so an unmatched pending group belongs to a later parent.
        if self._pending is not None and self._pending[0] == parent_id:
            rows = self._pending[1]
            self._pending = next(self._groups, None)
            return rows
        return []


def _lookup(
    conn: Connection, table: sa.Table, event_id: int, names: Sequence[str], build: Callable[..., dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Nested snapshots of a small table of the event, by id."""
    stmt = sa.select(table.c.id, *_columns(table, names)).where(table.c.event_id == event_id)
    return {row[0]: build(*row) for row in conn.execute(stmt)}


def _lookup_missing(
    conn: Connection,
    table: sa.Table,
    row_id: int,
    names: Sequence[str],
    build: Callable[..., dict[str, Any]],
    into: dict[int, dict[str, Any] | None],
) -> None:
    # A relation pointing outside the event: fetch it by id so the record still shows what the row links to.
    row = conn.execute(sa.select(table.c.id, *_columns(table, names)).where(table.c.id == row_id)).first()
    into[row_id] = build(*row) if row is not None else None


# --------------------------------------------------------------------------------------------------------- export


def event_record(db: OrmSession | Connection, event_id: int) -> dict[str, Any]:
    """The ``event`` object of the archive. Raises ``LookupError`` if the event does not exist."""
    conn = _connection(db)
    events = TABLES["event"]
    names = COLUMNS["event"] + _BOOKKEEPING
    row = conn.execute(sa.select(*_columns(events, names)).where(events.c.id == event_id)).first()
    if row is None:
        raise LookupError(f"event {event_id} not found")
    values = dict(zip(names, row, strict=True))
    copyright_row = (
        conn.execute(sa.select(*_columns(COPYRIGHTS, COPYRIGHT_COLUMNS)).where(COPYRIGHTS.c.event_id == event_id))
        .mappings()
        .first()
    )
    links = [
        nested_social_link(r[0], r[1], r[2])
        for r in conn.execute(
            sa.select(SOCIAL_LINKS.c.id, SOCIAL_LINKS.c.link, SOCIAL_LINKS.c.name)
            .where(SOCIAL_LINKS.c.event_id == event_id)
            .order_by(*order_key(SOCIAL_LINKS))
        )
    ]
    derived = derive_record("event", values, {"social_links": links, "copyright": nested_copyright(copyright_row)})
    return _finish("event", derived, values)


def iter_records(db: OrmSession | Connection, event_id: int, file: str) -> Iterator[dict[str, Any]]:
    """Records of one array file of the event, in file order (archive_order NULLS LAST, id), one at a time."""
    if file not in ARRAY_FILES:
        raise ValueError(f"{file!r} is not an array file of the archive")
    conn = _connection(db)
    if file == "sessions":
        yield from _iter_sessions(conn, event_id)
    elif file in ("speakers", "tracks"):
        yield from _iter_with_sessions(conn, event_id, file)
    else:
        yield from _iter_plain(conn, event_id, file)


def iter_file_text(db: OrmSession | Connection, event_id: int, file: str) -> Iterator[str]:
    """Text of one archive file (``event`` or an array file), chunk by chunk. ``meta`` is the exporter's."""
    if file == "event":
        yield dump_object(event_record(db, event_id))
    else:
        yield from iter_array_text(iter_records(db, event_id, file))


def _main_rows(conn: Connection, table: sa.Table, event_id: int, names: Sequence[str]) -> sa.CursorResult:
    stmt = sa.select(*_columns(table, names)).where(table.c.event_id == event_id).order_by(*order_key(table))
    return _stream(conn, stmt)


def _iter_plain(conn: Connection, event_id: int, file: str) -> Iterator[dict[str, Any]]:
    names = COLUMNS[file] + _BOOKKEEPING
    with _main_rows(conn, TABLES[file], event_id, names) as rows:
        for row in rows:
            values = dict(zip(names, row, strict=True))
            yield _finish(file, derive_record(file, values), values)


def _iter_sessions(conn: Connection, event_id: int) -> Iterator[dict[str, Any]]:
    sessions, speakers, links = TABLES["sessions"], TABLES["speakers"], SESSION_SPEAKERS
    # Nested snapshots are built once per related row and shared (records are never mutated in place).
    tracks = _lookup(conn, TABLES["tracks"], event_id, ("name",), nested_track)
    types = _lookup(conn, TABLES["session_types"], event_id, ("name", "length"), nested_session_type)
    micros = _lookup(conn, TABLES["microlocations"], event_id, ("name",), nested_microlocation)

    names = COLUMNS["sessions"] + ("track_id", "session_type_id", "microlocation_id") + _BOOKKEEPING
    # Speakers of each session, sorted by the sessions' own order, then by their position on the session.
    link_stmt = (
        sa.select(links.c.session_id, speakers.c.id, speakers.c.name, speakers.c.organisation)
        .select_from(links.join(sessions, sessions.c.id == links.c.session_id))
        .join(speakers, speakers.c.id == links.c.speaker_id)
        .where(sessions.c.event_id == event_id)
        .order_by(*order_key(sessions), links.c.position, speakers.c.id)
    )
    with _main_rows(conn, sessions, event_id, names) as rows, _stream(conn, link_stmt) as link_rows:
        merge = _MergeJoin(link_rows)
        for row in rows:
            v = dict(zip(names, row, strict=True))
            track_id, type_id, micro_id = v["track_id"], v["session_type_id"], v["microlocation_id"]
            if track_id is not None and track_id not in tracks:
                _lookup_missing(conn, TABLES["tracks"], track_id, ("name",), nested_track, tracks)
            if type_id is not None and type_id not in types:
                _lookup_missing(conn, TABLES["session_types"], type_id, ("name", "length"), nested_session_type, types)
            if micro_id is not None and micro_id not in micros:
                _lookup_missing(conn, TABLES["microlocations"], micro_id, ("name",), nested_microlocation, micros)
            relations = {
                "track": tracks.get(track_id),
                "session_type": types.get(type_id),
                "microlocation": micros.get(micro_id),
                "speakers": [nested_speaker(r[1], r[2], r[3]) for r in merge.take(v["id"])],
            }
            derived = derive_record("sessions", v, relations)
            yield _finish("sessions", derived, v)


def _iter_with_sessions(conn: Connection, event_id: int, file: str) -> Iterator[dict[str, Any]]:
    """Speakers or tracks, each with its ``sessions [{id,title}]`` in the sessions' file order."""
    table, sessions = TABLES[file], TABLES["sessions"]
    if file == "speakers":
        links = SESSION_SPEAKERS
        child_stmt = (
            sa.select(links.c.speaker_id, sessions.c.id, sessions.c.title)
            .select_from(links.join(table, table.c.id == links.c.speaker_id))
            .join(sessions, sessions.c.id == links.c.session_id)
            .where(table.c.event_id == event_id)
        )
    else:
        child_stmt = (
            sa.select(sessions.c.track_id, sessions.c.id, sessions.c.title)
            .select_from(sessions.join(table, table.c.id == sessions.c.track_id))
            .where(table.c.event_id == event_id, sessions.c.event_id == event_id)
        )
    child_stmt = child_stmt.order_by(*order_key(table), *order_key(sessions))
    names = COLUMNS[file] + _BOOKKEEPING
    with _main_rows(conn, table, event_id, names) as rows, _stream(conn, child_stmt) as child_rows:
        merge = _MergeJoin(child_rows)
        for row in rows:
            v = dict(zip(names, row, strict=True))
            relations = {"sessions": [nested_session(r[1], r[2]) for r in merge.take(v["id"])]}
            yield _finish(file, derive_record(file, v, relations), v)
