"""Dead letters: requests a worker gave up on (a poison message) are parked on a durable queue for operators.

``<service>.dead_letter`` (``importer.dead_letter``, ``exporter.dead_letter``) holds the original request payload
unchanged, with headers ``x-dead-letter-reason`` (the failure code), ``x-original-routing-key`` and ``x-task-id``.
Nothing consumes it: inspect it with the RabbitMQ management UI, move a message back to the request queue to retry.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider

DEFAULT_EXCHANGE = Exchange("", type="direct")


def dead_letter_queue(service_name: str) -> str:
    return f"{service_name}.dead_letter"


class DeadLetters(DependencyProvider):
    """``self.dead_letters(payload, reason=..., routing_key=..., task_id=...)`` parks a request on the service's
    dead-letter queue (declared at start-up, durable, published with confirms)."""

    def setup(self) -> None:
        self.queue = Queue(dead_letter_queue(self.container.service_name), exchange=DEFAULT_EXCHANGE,
                           routing_key=dead_letter_queue(self.container.service_name), durable=True,
                           auto_delete=False)
        self.publisher = Publisher(self.container.config[AMQP_URI_CONFIG_KEY], serializer="json",
                                   declare=[self.queue])

    def get_dependency(self, worker_ctx: Any) -> Any:
        def park(payload: dict[str, Any], *, reason: str, routing_key: str, task_id: str) -> None:
            self.publisher.publish(payload, exchange=DEFAULT_EXCHANGE, routing_key=self.queue.name,
                                   headers={"x-dead-letter-reason": reason, "x-original-routing-key": routing_key,
                                            "x-task-id": task_id},
                                   delivery_mode=2, mandatory=True)

        return park
