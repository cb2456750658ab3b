"""Bulk inserts on the driver's fast path, inside the caller's transaction.

``conn.execute(insert(table), rows)`` spends most of its time per row and per value in SQLAlchemy's parameter
processing; for the tens of thousands of rows of an import this does the same work once per batch instead: the
statement built once per table and column list, each value through its column type's bind processor (dates on
SQLite, JSON), then one ``executemany`` of plain tuples on SQLite, and one ``COPY ... FROM STDIN`` in PostgreSQL's
text format on PostgreSQL (written here with a few ``str`` scans per value, about a third of the client time of the
quoting that ``execute_values`` does, and the server parses COPY faster than multi-row INSERTs). Driver errors come
out as SQLAlchemy's (``IntegrityError``...), as from ``execute``.

The text format: columns separated by tabs, rows by newlines, NULL as ``\\N``, backslash, newline, tab and carriage
return escaped with a backslash; dates and times in their ``str`` form (ISO 8601 with a space), booleans as
``True``/``False``, both as PostgreSQL reads them.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

FAST_DIALECTS = ("sqlite", "postgresql")

_Plan = tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]
_PLANS: dict[tuple[str, str, tuple[str, ...], frozenset[str]], _Plan] = {}


def _plan(dialect: Dialect, table: sa.Table, names: tuple[str, ...], json_null: frozenset[str]) -> _Plan:
    key = (dialect.name, table.name, names, json_null)
    plan = _PLANS.get(key)
    if plan is None:
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in names)
        target = dialect.identifier_preparer.format_table(table)
        if dialect.name == "postgresql":
            sql = f"COPY {target} ({columns}) FROM STDIN"
        else:
            sql = f"INSERT INTO {target} ({columns}) VALUES ({', '.join('?' * len(names))})"
        processors = []
        for name in names:
            kind = sa.JSON(none_as_null=True) if name in json_null else table.c[name].type
            process = kind.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and isinstance(kind, sa.DateTime):
                process = _naive_memo(process)
            processors.append((name, process))
        plan = _PLANS[key] = (sql, processors)
    return plan


def _naive_memo(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` remembered for naive date-times (an event's rows share few; aware ones of one instant compare
    equal whatever their zone, so they are not remembered)."""
    remembered = functools.lru_cache(maxsize=4096)(process)

    def memo(value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return remembered(value)
        return process(value)

    return memo


def _text(value: Any) -> str:
    """One value in COPY's text format."""
    if type(value) is str:
        # Most values hold none of these: a scan each, and a copy only when one is found.
        if "\\" in value:
            value = value.replace("\\", "\\\\")
        if "\n" in value:
            value = value.replace("\n", "\\n")
        if "\t" in value:
            value = value.replace("\t", "\\t")
        if "\r" in value:
            value = value.replace("\r", "\\r")
        return value
    if value is None:
        return "\\N"
    return str(value)


def _copy(cursor: Any, sql: str, lines: list[str]) -> None:
    from psycopg2 import extensions

    # Bytes in the connection's encoding: a StringIO holding non-Latin-1 text is read back from a 4-bytes-a-character
    # buffer (a 1.5 MB batch took 6 MB while it was sent). Each row ends with a newline.
    codec = extensions.encodings.get(cursor.connection.encoding, "utf-8")
    buffer = io.BytesIO("\n".join(itertools.chain(lines, ("",))).encode(codec))
    # psycopg2 refuses COPY while a green wait callback is set (eventlet's, in the services). The COPY of one batch
    # runs without yielding, so no other greenlet can see the callback unset; it is back before this returns. Keep
    # it so: a COPY on another thread while greenlets run would let one of them query blocking, and one that waits
    # for a lock this transaction holds (a redelivered job's lease) would stop the hub, and this transaction with it.
    wait = extensions.get_wait_callback()
    extensions.set_wait_callback(None)
    try:
        cursor.copy_expert(sql, buffer, size=1 << 20)
    finally:
        extensions.set_wait_callback(wait)


@dataclass(frozen=True)
class PreparedRows:
    """One batch made ready for the driver (``prepare_rows``): plain values, nothing bound to a connection, so it
    can be built in another process and sent over a pipe (``shared.child_stream``)."""

    sql: str
    params: list[Any]  # COPY lines on PostgreSQL, tuples of driver values on SQLite
    copy: bool  # True: ``params`` are the lines of one ``COPY ... FROM STDIN``

    def __len__(self) -> int:
        return len(self.params)


def prepare_rows(dialect: Dialect, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
                 json_null: frozenset[str] = frozenset()) -> PreparedRows:
    """``rows`` (dicts with the same keys, naming columns of ``table``) as a batch for ``execute_prepared``; only
    for the dialects of ``FAST_DIALECTS``."""
    names = tuple(rows[0]) if rows else ()
    sql, processors = _plan(dialect, table, names, json_null)
    if dialect.name == "postgresql":
        lines: list[Any] = ["\t".join([_text(row[name] if process is None else process(row[name]))
                                        for name, process in processors]) for row in rows]
        return PreparedRows(sql, lines, copy=True)
    params = [[row[name] if process is None else process(row[name]) for name, process in processors]
              for row in rows]
    return PreparedRows(sql, params, copy=False)


def execute_prepared(conn: Connection, batch: PreparedRows) -> None:
    """Run one prepared batch on ``conn``, inside its transaction."""
    if not batch.params:
        return
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        if batch.copy:
            _copy(cursor, batch.sql, batch.params)
        else:
            cursor.executemany(batch.sql, batch.params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(batch.sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
                json_null: frozenset[str] = frozenset()) -> None:
    """Insert ``rows`` (dicts with the same keys, naming columns of ``table``) on ``conn``.

    ``json_null``: JSON columns whose ``None`` is SQL NULL rather than JSON ``null``.
    """
    if not rows:
        return
    if conn.dialect.name not in FAST_DIALECTS:
        conn.execute(sa.insert(table), list(rows))
        return
    execute_prepared(conn, prepare_rows(conn.dialect, table, rows, json_null=json_null))
