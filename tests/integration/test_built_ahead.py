"""``shared/built_ahead.py``: a generator on a native thread, one item ahead. Items come in order, the producer's
exception is raised in the consumer, a consumer that leaves early stops the thread, the hub runs while the consumer
waits, and a green pause in the producer (the importer's record loop has one) works on that thread."""

from __future__ import annotations

import time
from collections.abc import Iterator

import eventlet
import pytest
from eventlet import patcher

from shared.archive.loader import LoadError
from shared.built_ahead import built_ahead
from tests.support.hub_ticks import hub_ticks

_native_threading = patcher.original("threading")
_native_time = patcher.original("time")


def _built_ahead_threads() -> int:
    return sum(1 for t in _native_threading.enumerate() if t.name == "built-ahead")


def test_items_come_in_order_and_are_built_on_another_thread():
    consumer = _native_threading.get_ident()
    seen = []

    def produce() -> Iterator[int]:
        for n in range(500):
            seen.append(_native_threading.get_ident())
            yield n

    assert list(built_ahead(produce)) == list(range(500))
    assert seen and consumer not in seen
    assert _built_ahead_threads() == 0


def test_the_producers_exception_is_raised_in_the_consumer():
    def failing() -> Iterator[int]:
        yield 1
        raise LoadError("bad record", file="speakers", record_id=7)

    got = []
    with pytest.raises(LoadError, match="File speakers, ID 7: bad record"):
        for item in built_ahead(failing):
            got.append(item)
    assert got == [1]
    assert _built_ahead_threads() == 0


def test_a_consumer_that_leaves_early_stops_the_thread():
    built = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            built.append(n)
            yield n
            n += 1

    stream = built_ahead(endless)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert _built_ahead_threads() == 0
    assert len(built) <= 3 + 1  # the one built while the third was consumed


def test_the_hub_runs_while_the_consumer_waits_and_a_green_pause_in_the_producer_works():
    def slow() -> Iterator[int]:
        for n in range(5):
            eventlet.sleep(0)  # as the importer's record loop does: on this thread's own hub
            _native_time.sleep(0.1)  # computing, as far as the consumer can tell
            yield n

    with hub_ticks() as ticks:
        started = time.monotonic()
        assert list(built_ahead(slow)) == list(range(5))
    assert len([t for t in ticks if t >= started]) >= 20  # ~50 ticks in 0.5 s when the hub is free
