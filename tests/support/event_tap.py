"""Test helpers that watch and disturb the broker: a tap on a service's events, and cutting a consumer's connection."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote

import requests
from kombu import Connection, Exchange, Queue

from tests.support.rabbit import AUTH, MGMT_URL


class EventTap:
    """A queue bound to every event of ``service`` (its ``<service>.events`` exchange), read on demand."""

    def __init__(self, amqp_uri: str, service: str) -> None:
        self.amqp_uri = amqp_uri
        # Declared exactly as nameko declares its event exchanges, so both declarations agree.
        exchange = Exchange(f"{service}.events", type="topic", durable=True, auto_delete=False)
        self.queue = Queue(f"tap-{service}-{uuid.uuid4().hex[:8]}", exchange=exchange, routing_key="#",
                           durable=False, auto_delete=False)
        self.seen: list[tuple[str, dict]] = []
        with Connection(amqp_uri) as conn:
            self.queue(conn.channel()).declare()

    def drain(self) -> list[tuple[str, dict]]:
        """Every event published so far: (event type, payload), in arrival order."""
        with Connection(self.amqp_uri) as conn:
            bound = self.queue(conn.channel())
            while True:
                message = bound.get(no_ack=True)
                if message is None:
                    break
                self.seen.append((message.delivery_info["routing_key"], json.loads(message.body)))
        return list(self.seen)

    def of(self, task_id: str, event_type: str | None = None) -> list[dict]:
        return [p for t, p in self.drain() if p.get("task_id") == task_id and (event_type is None or t == event_type)]

    def first(self, event_type: str, match: Callable[[dict], bool], timeout: float = 30) -> dict:
        """The first ``event_type`` payload ``match`` accepts, waited for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for t, p in self.drain() if t == event_type and match(p)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no matching {event_type} in {timeout} s; seen {self.seen}"
            time.sleep(0.1)

    def wait_for(self, task_id: str, event_type: str, count: int = 1, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(task_id, event_type)
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"{count} x {event_type} for {task_id} not seen in {timeout} s"
            time.sleep(0.1)


def consumer_connection(vhost: str, queue: str, timeout: float = 30) -> str:
    """The name of the AMQP connection consuming from ``queue`` (the management API may list it with a delay)."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(f"{MGMT_URL}/api/consumers/{quote(vhost, safe='')}", auth=AUTH, timeout=10)
        r.raise_for_status()
        for consumer in r.json():
            if consumer["queue"]["name"] == queue:
                return consumer["channel_details"]["connection_name"]
        assert time.monotonic() < deadline, f"nobody consumes {queue}: {[c['queue']['name'] for c in r.json()]}"
        time.sleep(0.2)


def close_connection(name: str) -> None:
    """Cut an AMQP connection from the broker's side (what a missed heartbeat does)."""
    r = requests.delete(f"{MGMT_URL}/api/connections/{quote(name, safe='')}", auth=AUTH, timeout=10,
                        headers={"X-Reason": "test: connection cut"})
    assert r.status_code in (204, 404), r.text
