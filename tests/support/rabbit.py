"""Throwaway RabbitMQ vhosts through the management API (enabled by tools/ensure_services.sh)."""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import requests

MGMT_URL = os.environ.get("RABBITMQ_MGMT_URL", "http://127.0.0.1:15672")
AUTH = ("guest", "guest")
AMQP_HOST = os.environ.get("RABBITMQ_AMQP_HOST", "guest:guest@127.0.0.1:5672")


def create_vhost() -> str:
    name = f"nameko_test_{uuid.uuid4().hex[:10]}"
    requests.put(f"{MGMT_URL}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(f"{MGMT_URL}/api/permissions/{quote(name, safe='')}/guest", auth=AUTH, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    return name


def delete_vhost(name: str) -> None:
    requests.delete(f"{MGMT_URL}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10)


def amqp_uri(vhost: str) -> str:
    return f"amqp://{AMQP_HOST}/{quote(vhost, safe='')}"


def queue_info(vhost: str, queue: str) -> dict | None:
    r = requests.get(f"{MGMT_URL}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}", auth=AUTH, timeout=10)
    return r.json() if r.status_code == 200 else None


def consumers(vhost: str, queue: str) -> int:
    """How many consumers ``queue`` has now (0 if it does not exist yet)."""
    info = queue_info(vhost, queue)
    return int(info.get("consumers") or 0) if info else 0
def consumer_ports(vhost: str, queue: str | None = None) -> set[int]:
    """The client-side TCP ports of the connections consuming from ``queue`` (any queue of the vhost if None); the
    management API lists a new consumer within a few seconds."""
    r = requests.get(f"{MGMT_URL}/api/consumers/{quote(vhost, safe='')}", auth=AUTH, timeout=10)
    r.raise_for_status()
    # A consumer whose channel is closing is listed with empty details.
    return {c["channel_details"]["peer_port"] for c in r.json()
            if isinstance(c.get("channel_details"), dict) and (queue is None or c["queue"]["name"] == queue)}


def queue_stats(vhost: str) -> dict[str, dict]:
    """Every queue of the vhost: its ``message_stats`` counters (``ack``, ``redeliver``, ...), sampled every 5 s."""
    r = requests.get(f"{MGMT_URL}/api/queues/{quote(vhost, safe='')}", auth=AUTH, timeout=10)
    r.raise_for_status()
    return {q["name"]: q.get("message_stats") or {} for q in r.json()}


def connection_ports(vhost: str) -> set[int]:
    """The client-side TCP ports of the vhost's open AMQP connections."""
    r = requests.get(f"{MGMT_URL}/api/vhosts/{quote(vhost, safe='')}/connections", auth=AUTH, timeout=10)
    r.raise_for_status()
    return {c["peer_port"] for c in r.json() if "peer_port" in c}
