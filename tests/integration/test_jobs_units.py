"""Units of issue 9 items 3-5: the streamed string and fan-out limits, the task lease, the storage retry window."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from shared.archive.jsonstream import BYTES_PER_CHAR, iter_array
from shared.archive.safezip import ArchiveError, ArchiveLimits
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.jobs.lease import ACQUIRED, DONE, EXHAUSTED, Lease
from shared.jobs.retry import RetryWindow
from shared.models.base import utcnow
from shared.models.jobs import JobLease


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def test_a_long_string_is_refused_before_the_parser_buffers_it():
    limits = ArchiveLimits(max_string_chars=10_000)
    stream = CountingStream(b'[{"id": 1, "title": "x"}, {"id": 7, "title": "' + b"a" * 20_000_000 + b'"}]')
    with pytest.raises(ArchiveError) as raised:
        list(iter_array(stream, "sessions", limits))
    error = raised.value
    assert (error.code, error.file, error.record_id, error.field) == ("string_too_long", "sessions", 7, "title")
    # Stopped once the token passed the cap (plus a read chunk), not after the 20 MB were parsed into one string.
    assert stream.consumed <= BYTES_PER_CHAR * limits.max_string_chars + 2 * 65536


def test_strings_up_to_the_limit_pass_even_fully_escaped():
    limits = ArchiveLimits(max_string_chars=10_000)
    pair = b"\\ud83d\\ude00"  # one character, twelve raw bytes
    records = list(iter_array(io.BytesIO(b'[{"id": 1, "title": "' + pair * 10_000 + b'"}]'), "sessions", limits))
    assert len(records[0]["title"]) == 10_000


@pytest.mark.parametrize(("file", "key", "field"), [("sessions", "speakers", "max_session_speakers"),
                                                    ("speakers", "sessions", "max_speaker_sessions"),
                                                    ("tracks", "sessions", "max_track_sessions")])
def test_relation_lists_are_bounded_per_record_while_read(file, key, field):
    limits = ArchiveLimits(**{field: 3})
    ok = f'[{{"id": 4, "{key}": [{{"id": 1}}, {{"id": 2}}, {{"id": 3}}]}}]'.encode()
    assert len(list(iter_array(io.BytesIO(ok), file, limits))[0][key]) == 3
    too_many = f'[{{"id": 4, "{key}": [{{"id": 1}}, {{"id": 2}}, {{"id": 3}}, {{"id": 4}}]}}]'.encode()
    with pytest.raises(ArchiveError) as raised:
        list(iter_array(io.BytesIO(too_many), file, limits))
    error = raised.value
    assert (error.code, error.file, error.record_id, error.field) == ("too_many_relations", file, 4, key)
    assert f"{key} lists more than 3" in error.message


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'leases.db'}"
    upgrade_to_head(url)
    return make_session_factory(make_engine(url))


def _expire(db, task_id: str) -> None:
    with db() as session:
        session.execute(sa.update(JobLease).where(JobLease.task_id == task_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()


def test_a_live_lease_makes_the_second_run_wait_and_then_do_nothing(db):
    first = Lease(db, "t1", "import", ttl=60)
    assert first.acquire(max_deliveries=3) == ACQUIRED
    second = Lease(db, "t1", "import", ttl=60, pause=lambda _s: first.finish())  # the holder ends while it waits
    assert second.acquire(max_deliveries=3) == DONE


def test_an_expired_lease_is_taken_over_and_deliveries_are_counted(db):
    runs = [Lease(db, "t2", "export", ttl=60) for _ in range(4)]
    assert runs[0].acquire(max_deliveries=2) == ACQUIRED
    _expire(db, "t2")
    assert runs[1].acquire(max_deliveries=2) == ACQUIRED and runs[1].deliveries == 2
    assert not runs[0].holds()  # the presumed-dead run finds out and must stand down
    with db() as session, session.begin():
        assert not runs[0].holds(session.connection())
    _expire(db, "t2")
    assert runs[2].acquire(max_deliveries=2) == EXHAUSTED and runs[2].deliveries == 3
    runs[2].finish()
    assert runs[3].acquire(max_deliveries=2) == DONE


def test_storage_retries_stop_at_the_window():
    clock = [0.0]
    calls = []

    def step():
        calls.append(clock[0])
        raise ConnectionError("storage down")

    with pytest.raises(ConnectionError):
        RetryWindow(20, pause=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0]).run(
            step, transient=lambda e: isinstance(e, ConnectionError))
    assert calls == [0, 1, 3, 7, 15, 20]  # 1 s, 2 s, 4 s, 8 s, then cut to the window's end


def test_errors_that_are_not_transient_are_not_retried():
    calls = []

    def step():
        calls.append(1)
        raise ValueError("bad archive")

    with pytest.raises(ValueError):
        RetryWindow(60, pause=lambda s: None).run(step, transient=lambda e: isinstance(e, ConnectionError))
    assert calls == [1]


def test_a_lease_held_by_a_dead_process_of_this_host_is_taken_over_at_once(db):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # gone, and reaped: its pid names no process now
    host = Lease(db, "t3", "import", ttl=600).owner.split(":")[0]
    dead = Lease(db, "t3", "import", ttl=600, owner=f"{host}:{child.pid}:abc")
    assert dead.acquire(max_deliveries=3) == ACQUIRED
    alive = Lease(db, "t4", "import", ttl=600, owner=f"{host}:1:abc")  # pid 1 exists: alive, expiry decides
    assert alive.acquire(max_deliveries=3) == ACQUIRED
    assert Lease(db, "t3", "import", ttl=600).acquire(max_deliveries=3) == ACQUIRED  # no wait for 600 s
    waited = []
    late = Lease(db, "t4", "import", ttl=600, pause=lambda s: (waited.append(s), alive.finish()))
    assert late.acquire(max_deliveries=3) == DONE and waited
