"""Graceful drain of every service on SIGTERM: take no new work, finish and ack what is running, then exit; past
``DRAIN_DEADLINE`` seconds hand the rest back to the broker.

``deploy/nameko.yml`` names ``DrainingContainer`` as nameko's container class (``SERVICE_CONTAINER_CLS``), so the
ordinary ``nameko run`` of every service uses it.

Why nameko's own stop is not enough (nameko 2.14, ``ServiceContainer.stop``): it stops the entrypoints first, and
each AMQP entrypoint unregisters from the container's one ``QueueConsumer``, which closes its broker connection as
soon as no consumer is left (``QueueConsumer.on_iteration``), while the workers of the messages it delivered are
still running. The broker requeues those messages, the workers' acks are then skipped (``ack_message`` finds no
connection) and another instance runs every one of them again. The stop also waits for the workers without a
deadline, and the HTTP server keeps accepting connections until the very end.

``DrainingContainer.stop``:

1. holds every ``QueueConsumer``'s connection open (a placeholder in its consumer table), closes the HTTP listening
   sockets (new connections go to the other instances; a readiness probe fails) and turns keep-alive off, then
   stops the entrypoints as nameko does (consumers are cancelled: no new deliveries; timers stop);
2. waits up to ``DRAIN_DEADLINE`` seconds for the running workers: they finish and their acks reach the broker;
3. past the deadline, throws ``HandedBack`` into every worker still running, except one publishing its outcome
   (``finishing``: waited for a little longer). A job releases its lease and publishes nothing; its message, never
   acked, goes back to the queue when the connection closes (step 4), and another instance takes it at once;
4. lets the connections close and stops dependencies and the rest as nameko does.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import eventlet
from greenlet import GreenletExit
from nameko.containers import ServiceContainer
from nameko.messaging import QueueConsumer
from nameko.web.server import WebServer

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 120.0  # seconds; DRAIN_DEADLINE overrides it
FINISHING_GRACE = 10.0  # seconds past the deadline for a worker that is publishing its outcome
HANDED_BACK_GRACE = 10.0  # seconds handed-back workers get to release their leases
ENTRYPOINTS_STOP_MIN = 5.0  # seconds the entrypoints always get to stop (consumers cancelled)

_finishing: weakref.WeakSet[Any] = weakref.WeakSet()


class HandedBack(GreenletExit):
    """Thrown into a worker still running at the drain deadline: stop at once and publish nothing; the request
    goes back to the broker for another instance. A ``GreenletExit``: no ``except Exception`` catches it."""


@contextmanager
def finishing() -> Iterator[None]:
    """Around publishing a job's outcome: a drain deadline waits for it instead of interrupting it (a job reported
    but not marked finished would run and be reported again)."""
    current = eventlet.getcurrent()
    _finishing.add(current)
    try:
        yield
    finally:
        _finishing.discard(current)


def drain_deadline(config: dict[str, Any]) -> float:
    value = config.get("DRAIN_DEADLINE", os.environ.get("DRAIN_DEADLINE", DEFAULT_DEADLINE))
    return max(0.0, float(value if value not in (None, "") else DEFAULT_DEADLINE))


class _HoldOpen:
    """Sits in a ``QueueConsumer``'s consumer table while the workers drain: nameko closes the connection when the
    table is empty. Never a real consumer, so there is nothing to cancel."""

    def cancel(self) -> None:
        pass


def _stop_accepting(server: WebServer) -> None:
    """``WebServer.stop`` without its wait for the HTTP entrypoints (they unregister later): the listening socket
    closes now, and kept-alive connections close after their current response."""
    if server._serv is not None:
        server._serv.keepalive = False
    server._is_accepting = False
    if server._gt is not None:
        server._gt.kill()
    if server._sock is not None:
        server._sock.close()


class DrainingContainer(ServiceContainer):
    """nameko's container with the drain above; ``kill`` is unchanged."""

    _draining = False

    def stop(self) -> None:
        if self._died.ready() or self._being_killed:
            return super().stop()
        if self._draining:  # a second SIGTERM: the first drain goes on
            self._died.wait()
            return
        self._draining = True
        deadline = drain_deadline(self.config)
        started = time.monotonic()
        hold = _HoldOpen()
        consumers = [ext for ext in self.subextensions if isinstance(ext, QueueConsumer)]
        for consumer in consumers:
            consumer._consumers[hold] = hold
        for server in (ext for ext in self.subextensions if isinstance(ext, WebServer)):
            _stop_accepting(server)
        log.info("%s draining: %d worker(s) running, deadline %g s", self.service_name, len(self._worker_threads),
                 deadline)
        # A timer's stop waits for its running tick: within the deadline too (a tick still running is handed back
        # below and its stop ends with the container's managed threads). Cancelling the consumers takes one turn
        # of the consumer loop (up to 1 s): always given that, or deliveries would go on with DRAIN_DEADLINE=0.
        with eventlet.Timeout(max(deadline, ENTRYPOINTS_STOP_MIN), False):
            self.entrypoints.all.stop()
        if not self._wait_for_workers(max(0.0, started + deadline - time.monotonic())):
            self._hand_back()
        for consumer in consumers:
            consumer._consumers.pop(hold, None)  # the connection closes once the remaining consumers are cancelled
        log.info("%s drained in %.1f s", self.service_name, time.monotonic() - started)
        # The rest of nameko's stop: no worker is using the dependencies any more.
        self.dependencies.all.stop()
        self.subextensions.all.stop()
        self._kill_managed_threads()
        self.started = False
        log.info("%s stopped in %.1f s", self.service_name, time.monotonic() - started)
        if not self._died.ready():
            self._died.send(None)

    def _wait_for_workers(self, seconds: float) -> bool:
        with eventlet.Timeout(seconds, False):
            self._worker_pool.waitall()
        return not self._worker_threads

    def _hand_back(self) -> None:
        grace = time.monotonic() + FINISHING_GRACE
        while any(gt in _finishing for gt in self._worker_threads.values()) and time.monotonic() < grace:
            eventlet.sleep(0.05)
        late = list(self._worker_threads.items())
        for worker_ctx, gt in late:
            log.warning("%s: handed back %s (still running at the drain deadline)", self.service_name, worker_ctx)
            gt.kill(HandedBack)
        if not self._wait_for_workers(HANDED_BACK_GRACE):
            log.warning("%s: %d handed-back worker(s) did not stop in time", self.service_name,
                        len(self._worker_threads))
