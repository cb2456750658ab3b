"""A generator run on a native thread, one item ahead of its consumer: the next item is built while the consumer
uses the last one, and no further (two items in memory). It pays while the consumer waits on something that
releases the GIL: the importer's ``COPY`` waiting for PostgreSQL to take a batch.

The thread is the interpreter's own (``eventlet.patcher.original``), so it builds in parallel with the hub's
thread whenever that one is blocked outside Python. The consumer waits for an item green (``tpool``): the hub keeps
running then. The producer must compute only: no database, no sockets; a green pause in it (the importer's record
loop pauses for heartbeats) runs on a hub of that thread's own and returns at once.

An exception raised by the producer is raised in the consumer. Leaving the iteration early stops the producer at
its next item, and waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from eventlet import patcher, tpool

T = TypeVar("T")

_queue = patcher.original("queue")
_threading = patcher.original("threading")


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def built_ahead(produce: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of ``produce()``, each built on a native thread while the previous one is consumed."""
    items: Any = _queue.Queue(maxsize=1)
    stop = _threading.Event()

    def run() -> None:
        try:
            for item in produce():
                items.put(item)
                items.join()  # until the consumer took it: one item built while one is consumed, no more
                if stop.is_set():
                    return  # before building one more
            items.put(_End())
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            items.put(_End(exc))

    thread = _threading.Thread(target=run, name="built-ahead", daemon=True)
    thread.start()
    green = patcher.is_monkey_patched("thread")
    try:
        while True:
            item = tpool.execute(items.get) if green else items.get()
            items.task_done()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()  # a producer waiting for its item to be taken sees stop, and leaves
                items.task_done()
            except _queue.Empty:
                pass
            if green:
                tpool.execute(thread.join, 0.05)
            else:
                thread.join(0.05)
