"""Polling with a deadline, what tests and benchmarks wait with (never a sleep standing in for synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float = 30, pause: float = 0.1) -> T:
    """Call ``check`` every ``pause`` seconds until it returns something true, and return that; ``TimeoutError``
    (naming ``what``) once ``timeout`` seconds have passed without."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(pause)
