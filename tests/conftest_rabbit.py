"""A throwaway RabbitMQ vhost per test module, created and deleted through the management HTTP API.

Not a conftest.py on purpose: modules that need a broker import the fixture
(``from tests.conftest_rabbit import rabbit_vhost_uri  # noqa: F401``). The API must be enabled once with
``rabbitmq-plugins enable rabbitmq_management``; without it (or without RabbitMQ) the tests are skipped.
Vhosts are named ``nameko_test_*`` so that leftovers of killed runs are easy to find and delete.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

MGMT_URL = os.environ.get("RABBITMQ_MGMT_URL", "http://127.0.0.1:15672").rstrip("/")
MGMT_AUTH = (os.environ.get("RABBITMQ_MGMT_USER", "guest"), os.environ.get("RABBITMQ_MGMT_PASS", "guest"))
AMQP_BASE = os.environ.get("RABBITMQ_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")


def _management_ready(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{MGMT_URL}/api/overview", auth=MGMT_AUTH, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


@pytest.fixture(scope="module")
def rabbit_vhost_uri() -> Iterator[str]:
    """``amqp://.../<vhost>`` of a fresh vhost, deleted (with its queues and exchanges) after the module."""
    if not _management_ready(timeout=10):
        pytest.skip(f"RabbitMQ management API not reachable at {MGMT_URL} (enable the rabbitmq_management plugin)")
    vhost = f"nameko_test_{uuid.uuid4().hex[:12]}"
    quoted = quote(vhost, safe="")
    user = MGMT_AUTH[0]
    requests.put(f"{MGMT_URL}/api/vhosts/{quoted}", auth=MGMT_AUTH, timeout=10).raise_for_status()
    try:
        requests.put(
            f"{MGMT_URL}/api/permissions/{quoted}/{quote(user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            auth=MGMT_AUTH,
            timeout=10,
        ).raise_for_status()
        yield f"{AMQP_BASE}/{quoted}"
    finally:
        requests.delete(f"{MGMT_URL}/api/vhosts/{quoted}", auth=MGMT_AUTH, timeout=10)
