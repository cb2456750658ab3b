"""Retry a step whose dependency is briefly down (storage restarting), with backoff, within a time window.

The request is still on its durable queue while a job waits, so waiting is cheaper than failing it for good: only
once the window (``STORAGE_RETRY_SECONDS``) is spent does the job end FAILURE with the dependency's error. One
``RetryWindow`` per job: a quick step retried in place (an RPC) and the whole job retried around it (an upload cut
off half-way) share one deadline, so the window is never spent twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

BASE_DELAY = 1.0  # seconds before the first retry; doubled each time
MAX_DELAY = 15.0


class RetryWindow:
    """A deadline ``seconds`` from now; ``pause`` must be green in a service (``eventlet.sleep``)."""

    def __init__(self, seconds: float, *, pause: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pause, self.clock = pause, clock
        self.deadline = clock() + seconds

    def run(self, step: Callable[[], T], *, transient: Callable[[BaseException], bool], what: str = "step") -> T:
        """Run ``step``; while it raises what ``transient`` accepts and the window allows, wait and run it again.

        Waits 1 s, 2 s, 4 s... (at most 15 s); the last wait is cut to end at the deadline, and the error raised
        after it is the step's own.
        """
        delay = BASE_DELAY
        attempt = 1
        while True:
            try:
                return step()
            except Exception as exc:
                left = self.deadline - self.clock()
                if not transient(exc) or left <= 0:
                    raise
                wait = min(delay, left)
                log.warning("%s failed (attempt %d: %s); retrying in %.1f s (%.0f s left)", what, attempt, exc,
                            wait, left)
                self.pause(wait)
                delay = min(delay * 2, MAX_DELAY)
                attempt += 1


def retry_within(step: Callable[[], T], *, window: float, transient: Callable[[BaseException], bool],
                 pause: Callable[[float], None] = time.sleep, what: str = "step",
                 clock: Callable[[], float] = time.monotonic) -> T:
    """``RetryWindow(window).run(step)``: retries of one step for ``window`` seconds."""
    return RetryWindow(window, pause=pause, clock=clock).run(step, transient=transient, what=what)
