"""The gateway's request publisher: declares the workers' request queues before any request is accepted."""

from __future__ import annotations

from kombu import Queue
from nameko.events import EventDispatcher
from nameko.standalone.events import get_event_exchange

from shared import contracts as c

# event type -> the durable queue of the worker that handles it (see shared.contracts.handler_queue)
REQUEST_QUEUES = {c.EXPORT_REQUESTED: c.EXPORT_REQUEST_QUEUE}


class RequestDispatcher(EventDispatcher):
    """An EventDispatcher that never drops a request.

    Events published before a subscriber's queue exists are silently dropped (PLATFORM_NOTES 2), so at start-up the
    gateway declares each worker's queue exactly as nameko would, and publishes with ``mandatory`` so that an
    unroutable request is an error for the caller, never a silent loss.
    """

    def __init__(self) -> None:
        super().__init__(mandatory=True)

    def setup(self) -> None:
        exchange = get_event_exchange(self.container.service_name, self.container.config)
        for event_type, queue_name in REQUEST_QUEUES.items():
            self.declare.append(
                Queue(queue_name, exchange=exchange, routing_key=event_type, durable=True, auto_delete=False)
            )
        super().setup()
