"""``shared/bulk_insert.py`` stores exactly what a Core ``insert`` stores, and fails as it does, on both databases."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy as sa

from shared.bulk_insert import insert_rows

METADATA = sa.MetaData()
THINGS = sa.Table(
    "bulk_things", METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40)),
    sa.Column("at", sa.DateTime),
    sa.Column("doc", sa.JSON),
    sa.Column("extra", sa.JSON),
)
ROWS = [
    {"name": "J\u00fcrgen \U0001f600", "at": datetime(2016, 3, 18, 9, 30), "doc": {"a": [1, None]}, "extra": None},
    {"name": None, "at": None, "doc": None, "extra": {"k": "v"}},
    {"name": "x", "at": datetime(2016, 3, 18, 9, 30, 0, 250), "doc": [], "extra": []},
]


@pytest.fixture
def engine(database_url):
    engine = sa.create_engine(database_url)
    METADATA.create_all(engine)
    yield engine
    engine.dispose()


def _stored(conn, ids: range) -> list[tuple]:
    # As the database holds them: text of dates on SQLite, SQL NULL or JSON null.
    cast = "CAST({} AS TEXT)" if conn.dialect.name == "postgresql" else "{}"
    columns = ", ".join(cast.format(c) for c in ("name", "at", "doc", "extra"))
    return [tuple(r) for r in conn.execute(
        sa.text(f"SELECT {columns}, extra IS NULL FROM bulk_things WHERE id BETWEEN :a AND :b ORDER BY id"),
        {"a": ids.start, "b": ids.stop - 1})]


def test_rows_are_stored_as_a_core_insert_stores_them(engine):
    with engine.begin() as conn:
        extra = sa.bindparam("extra", type_=sa.JSON(none_as_null=True))
        conn.execute(sa.insert(THINGS).values(extra=extra), [{"id": i + 1, **r} for i, r in enumerate(ROWS)])
        insert_rows(conn, THINGS, [{"id": i + 11, **r} for i, r in enumerate(ROWS)], json_null=frozenset({"extra"}))
        core, bulk = _stored(conn, range(1, 4)), _stored(conn, range(11, 14))
    assert bulk == core
    assert [row[-1] for row in bulk] == [True, False, False]  # None went in as SQL NULL, not JSON null


def test_a_conflict_is_sqlalchemys_integrity_error_and_the_transaction_rolls_back(engine):
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            insert_rows(conn, THINGS, [{"id": 1, "name": "a"}])
            insert_rows(conn, THINGS, [{"id": 2, "name": "b"}, {"id": 1, "name": "again"}])
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM bulk_things")) == 0


def test_text_with_separators_escapes_and_empty_strings_round_trips(engine):
    # On PostgreSQL the rows travel as COPY text: tabs, newlines, backslashes and \N must come back as written.
    names = ["tab\there", "new\nline\r\n", "back\\slash \\N \\t", "", "\\", "\N{GRINNING FACE}\"q\"'"]
    with engine.begin() as conn:
        insert_rows(conn, THINGS, [{"id": 100 + i, "name": n, "doc": {"s": n}} for i, n in enumerate(names)])
        stored = conn.execute(sa.text("SELECT name, doc FROM bulk_things WHERE id >= 100 ORDER BY id")).all()
    assert [row[0] for row in stored] == names
    assert [row[1] if isinstance(row[1], dict) else json.loads(row[1]) for row in stored] == [
        {"s": n} for n in names]
