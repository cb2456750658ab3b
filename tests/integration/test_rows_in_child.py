"""The loader's rows built in a forked child process while the parent inserts them (``shared/child_stream.py``),
or one batch ahead on a native thread (``shared/built_ahead.py``): the same rows as built inline, on SQLite and
PostgreSQL; a child that fails or dies fails the load and the
caller's transaction writes nothing; the stream itself keeps order, raises what the child raised, kills and reaps a
child it stops reading, and leaves the eventlet hub running while it waits."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import eventlet
import psutil
import pytest
import sqlalchemy as sa

from bench import realistic
from shared import child_stream
from shared.archive.loader import CHILD_MIN_ROWS, LoadError, load_event
from shared.archive.records import SESSION_SPEAKERS, TABLES
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models.events import Event
from tests.conftest import throwaway_postgres
from tests.support.hub_ticks import hub_ticks

SESSIONS = 3000
CLOCK_COLUMNS = {"created_at", "updated_at"}  # the time of each load


@pytest.fixture
def files(samples_dir) -> dict[str, Any]:
    sample = realistic.load_sample(samples_dir / "open_event" / "legacy" / "FOSSASIA16")
    return realistic.cycle_event(sample, SESSIONS)


class DictSource:
    """A ``RecordSource`` over the archive's parsed files; ``change`` alters what the write pass (the second read of
    ``sessions``) sees."""

    def __init__(self, files: dict[str, Any], change: Any = None) -> None:
        self.files, self.change, self.reads = files, change, 0

    def event(self) -> dict[str, Any]:
        return self.files["event"]

    def records(self, file: str) -> Iterator[Any]:
        records = self.files.get(file, [])
        if file != "sessions" or self.change is None:
            return iter(records)
        self.reads += 1
        return iter(records) if self.reads == 1 else self.change(records)


@contextmanager
def database(kind: str, tmp_path, name: str) -> Iterator[Any]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        upgrade_to_head(url)
        yield url
    else:
        with throwaway_postgres() as url:
            upgrade_to_head(url)
            yield url


def load(url: str, source: Any, rows_in_child: bool,
         rows_ahead: bool = False) -> tuple[dict[str, int], dict[str, list[tuple]]]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            result = load_event(session, source, keep_ids=False, rows_in_child=rows_in_child, rows_ahead=rows_ahead)
            session.commit()
        with engine.connect() as conn:
            dump = {table.name: [tuple(row) for row in conn.execute(
                sa.select(*(c for c in table.c if c.name not in CLOCK_COLUMNS)).order_by(*table.primary_key))]
                for table in (*TABLES.values(), SESSION_SPEAKERS)}
        return result.counts, dump
    finally:
        engine.dispose()


def event_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(Event))
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("builder", ["child", "ahead"])
def test_rows_built_in_a_child_or_ahead_on_a_thread_are_the_rows_built_inline(builder, kind, files, tmp_path):
    with database(kind, tmp_path, "inline") as inline_url, database(kind, tmp_path, builder) as child_url:
        inline_counts, inline_rows = load(inline_url, DictSource(files), rows_in_child=False, rows_ahead=False)
        child_counts, child_rows = load(child_url, DictSource(files), rows_in_child=builder == "child",
                                        rows_ahead=builder == "ahead")
    assert inline_counts["sessions"] == SESSIONS and inline_counts["session_speakers"] > SESSIONS // 2
    assert sum(inline_counts.values()) >= CHILD_MIN_ROWS  # what load_event would build in a child unasked
    assert child_counts == inline_counts
    assert len(child_rows["sessions"]) == SESSIONS
    for table, rows in inline_rows.items():
        assert child_rows[table] == rows, table


def _one_fewer(records: list[Any]) -> Iterator[Any]:
    return iter(records[:-1])


def _killed_midway(test_process: int) -> Any:
    def change(records: list[Any]) -> Iterator[Any]:
        for position, record in enumerate(records):
            if position == len(records) // 2 and os.getpid() != test_process:
                os.kill(os.getpid(), signal.SIGKILL)  # only ever the child: it is where the rows are built
            yield record

    return change


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("builder", ["child", "ahead"])
def test_a_load_error_while_rows_are_built_is_raised_and_nothing_is_written(builder, kind, files, tmp_path):
    with database(kind, tmp_path, "db") as url:
        with pytest.raises(LoadError) as info:
            load(url, DictSource(files, change=_one_fewer), rows_in_child=builder == "child",
                 rows_ahead=builder == "ahead")
        assert (info.value.file, info.value.detail) == ("sessions", "the file changed while it was being read")
        assert event_count(url) == 0


def test_a_child_killed_midway_fails_the_load_and_nothing_is_written(files, tmp_path):
    with database("sqlite", tmp_path, "db") as url:
        source = DictSource(files, change=_killed_midway(os.getpid()))
        with pytest.raises(child_stream.ChildFailed, match=f"killed by signal {signal.SIGKILL}"):
            load(url, source, rows_in_child=True)
        assert event_count(url) == 0


def test_an_insert_side_failure_stops_the_child_at_once(files, tmp_path):
    class Stop(Exception):
        pass

    def on_progress(stage: str, done: int, total: int) -> None:
        raise Stop  # in the parent, after the first batch was inserted: the child is still building

    with database("sqlite", tmp_path, "db") as url:
        engine = make_engine(url)
        others = {p.pid for p in psutil.Process().children()}  # servers other fixtures of the run may have started
        try:
            with make_session_factory(engine)() as session, pytest.raises(Stop) as info:
                load_event(session, DictSource(files), keep_ids=False, on_progress=on_progress, rows_in_child=True)
            # The traceback (kept by pytest.raises) still holds the loader's frames: the child must be gone anyway.
            assert info.traceback
            assert [p for p in psutil.Process().children() if p.pid not in others] == []
        finally:
            engine.dispose()
        assert event_count(url) == 0


def test_the_stream_keeps_order_and_raises_what_the_child_raised():
    assert list(child_stream.stream_from_child(lambda: (n * n for n in range(2000)))) == [n * n for n in
                                                                                          range(2000)]

    def failing() -> Iterator[int]:
        yield 1
        raise LoadError("bad record", file="speakers", record_id=7)

    items = []
    with pytest.raises(LoadError) as info:
        for item in child_stream.stream_from_child(failing):
            items.append(item)
    assert items == [1] and (info.value.file, info.value.record_id, str(info.value)) == (
        "speakers", 7, "File speakers, ID 7: bad record")

    class Unpicklable(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(f"{a}/{b}")

    def odd() -> Iterator[int]:
        raise Unpicklable(1, 2)
        yield 0

    with pytest.raises(child_stream.ChildFailed, match="Unpicklable: 1/2"):
        list(child_stream.stream_from_child(odd))


def _pid_of_child(stream: Iterator[Any]) -> int:
    pid = next(stream)
    assert pid != os.getpid()
    return pid


def test_a_stream_left_early_kills_and_reaps_its_child():
    def endless() -> Iterator[int]:
        yield os.getpid()
        while True:
            yield 0

    stream = child_stream.stream_from_child(endless)
    pid = _pid_of_child(stream)
    stream.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_hub_keeps_running_while_the_child_works():
    # The conftest monkey-patches eventlet: the pipe is read green, so other greenthreads run meanwhile.
    def slow() -> Iterator[int]:
        # Blocking: a green sleep in the child would run the hub it copied, whose epoll set is the parent's.
        eventlet.patcher.original("time").sleep(0.5)
        yield 1

    with hub_ticks() as ticks:
        started = time.monotonic()
        assert list(child_stream.stream_from_child(slow)) == [1]
        waited = time.monotonic() - started
    assert waited >= 0.5
    assert len([t for t in ticks if t >= started]) >= 10  # the hub ran every ~10 ms of those 0.5 s


def test_a_green_yield_in_the_child_runs_no_greenthread_of_the_parent(tmp_path):
    # The importer's record loop pauses (eventlet.sleep) every few hundred records, in the child too.
    test_process, seen = os.getpid(), tmp_path / "ran_in_child"

    def spy() -> None:
        while True:
            if os.getpid() != test_process:
                seen.write_text(str(os.getpid()))
            eventlet.sleep(0.001)

    def pausing() -> Iterator[int]:
        for n in range(20):
            eventlet.sleep(0)
            eventlet.sleep(0.005)
            yield n

    thread = eventlet.spawn(spy)
    try:
        eventlet.sleep(0)  # the spy is running (it waits on a timer when the fork happens)
        assert list(child_stream.stream_from_child(pausing)) == list(range(20))
    finally:
        thread.kill()
    assert not seen.exists()
