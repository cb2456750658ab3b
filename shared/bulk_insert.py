"""Bulk inserts on the driver's fast path, inside the caller's transaction.

``conn.execute(insert(table), rows)`` spends most of its time per row and per value in SQLAlchemy's parameter
processing; for the tens of thousands of rows of an import this does the same work once per batch instead: the
statement built once per table and column list, each value through its column type's bind processor (dates on
SQLite, JSON), then one ``executemany`` of plain tuples on SQLite, and ``psycopg2.extras.execute_values`` (a few
multi-row INSERTs) on PostgreSQL. Driver errors come out as SQLAlchemy's (``IntegrityError``...), as from
``execute``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

PG_PAGE_ROWS = 1000  # rows per multi-row INSERT on PostgreSQL

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
            sql = f"INSERT INTO {target} ({columns}) VALUES %s"
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
    params = [tuple(row[name] if process is None else process(row[name]) for name, process in processors)
              for row in rows]
    dbapi = conn.connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        if conn.dialect.name == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(cursor, sql, params, page_size=PG_PAGE_ROWS)
        else:
            cursor.executemany(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
