"""shared.metrics.serve: off at 0, one server per port and process, serving the named metrics."""

from __future__ import annotations

import requests

from shared import metrics
from tests.conftest import free_port


def test_serve_once_per_port_and_not_at_zero() -> None:
    assert metrics.serve(0) is False
    port = free_port()
    assert metrics.serve(port, "127.0.0.1") is True
    assert metrics.serve(port, "127.0.0.1") is False  # a second container in the process: the same server
    metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'eventport_webhook_deliveries_total{outcome="delivered"}' in text
    assert "eventport_jobs_total" in text or "# HELP eventport_jobs" in text
