"""Whether the eventlet hub keeps running while a test's code waits: a greenthread notes the time every 10 ms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import eventlet

TICK = 0.01


@contextmanager
def hub_ticks() -> Iterator[list[float]]:
    """The monotonic times at which the ticker ran, filled in while the block runs (it runs only when the hub does)."""
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            eventlet.sleep(TICK)

    thread = eventlet.spawn(ticker)
    try:
        eventlet.sleep(0)  # started before the block: it waits on its timer from now on
        yield ticks
    finally:
        thread.kill()
