"""Bulk inserts on the driver's fast path, inside the caller's transaction.

``conn.execute(insert(table), rows)`` spends most of its time per row and per value in SQLAlchemy's parameter
processing; for the tens of thousands of rows of an import this does the same work once per batch instead: the
statement built once per table and column list, each value through its column type's bind processor (dates on
SQLite, JSON), then one ``executemany`` of plain tuples on SQLite, and one ``COPY ... FROM STDIN`` of CSV on
PostgreSQL (the server parses it several times faster than multi-row INSERTs, and the CSV is written by the
``csv`` module's C writer). Driver errors come out as SQLAlchemy's (``IntegrityError``...), as from ``execute``.

The CSV: every value but a number quoted (``QUOTE_NONNUMERIC``), SQL NULL written as an unquoted empty field,
which is how PostgreSQL's CSV format tells NULL from the empty string; dates and times in their ``str`` form, which
is ISO 8601 with a space, as PostgreSQL reads it.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_Plan = tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]
_PLANS: dict[tuple[str, str, tuple[str, ...], frozenset[str]], _Plan] = {}


def _plan(conn: Connection, table: sa.Table, names: tuple[str, ...], json_null: frozenset[str]) -> _Plan:
    dialect = conn.dialect
    key = (dialect.name, table.name, names, json_null)
    plan = _PLANS.get(key)
    if plan is None:
        quote = dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in names)
        target = dialect.identifier_preparer.format_table(table)
        if dialect.name == "postgresql":
            sql = f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)"
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


class _Null:
    """SQL NULL in the CSV: ``QUOTE_NONNUMERIC`` leaves what passes for a number unquoted, and it prints as
    nothing (``None`` itself would be written as a quoted empty string, the empty string)."""

    __slots__ = ()

    def __float__(self) -> float:  # what makes the csv module see a number
        return 0.0

    def __str__(self) -> str:
        return ""


_NULL = _Null()


def _copy(cursor: Any, sql: str, params: list[list[Any]]) -> None:
    from psycopg2 import extensions

    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(params)
    buffer.seek(0)
    # psycopg2 refuses COPY while a green wait callback is set (eventlet's, in the services). The COPY of one batch
    # runs without yielding, so no other greenlet can see the callback unset; it is back before this returns.
    wait = extensions.get_wait_callback()
    extensions.set_wait_callback(None)
    try:
        cursor.copy_expert(sql, buffer, size=1 << 20)
    finally:
        extensions.set_wait_callback(wait)


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
                json_null: frozenset[str] = frozenset()) -> None:
    """Insert ``rows`` (dicts with the same keys, naming columns of ``table``) on ``conn``.

    ``json_null``: JSON columns whose ``None`` is SQL NULL rather than JSON ``null``.
    """
    if not rows:
        return
    if conn.dialect.name not in ("sqlite", "postgresql"):
        conn.execute(sa.insert(table), list(rows))
        return
    names = tuple(rows[0])
    sql, processors = _plan(conn, table, names, json_null)
    if conn.dialect.name == "postgresql":
        params = [[_NULL if (value := row[name] if process is None else process(row[name])) is None else value
                   for name, process in processors] for row in rows]
    else:
        params = [[row[name] if process is None else process(row[name]) for name, process in processors]
                  for row in rows]
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        if conn.dialect.name == "postgresql":
            _copy(cursor, sql, params)
        else:
            cursor.executemany(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
