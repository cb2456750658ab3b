"""Prometheus metrics of every service: the metric objects, named once here, and the exposition server.

Use the objects directly (``metrics.MAILS.labels(outcome="sent").inc()``); a process exposes them on ``METRICS_PORT``
(off when unset or 0) once ``shared.dependencies.MetricsServer`` started the server. Label values are small fixed
sets (never ids or URLs), so the series stay few.

- ``JOBS`` (kind: export | import; state: started | success | failure) and ``JOB_DURATION`` (seconds from taking the
  request to publishing its outcome, by kind and final state): ``shared/jobs/lifecycle.py``.
- ``JOB_QUEUE_LAG``: seconds from the request (its event's ``occurred_at``, set when the gateway accepted it) to a
  worker starting it, by kind: how long requests wait for a free worker.
- ``MAILS`` (outcome: sent | failed | retried | uncertain): one per SMTP attempt's result, ``services/mailer``.
- ``WEBHOOK_DELIVERIES`` (outcome: delivered | failed | retried): one per delivery attempt's result (webhooks).
- ``HTTP_REQUESTS`` (method, route: the entrypoint's URL rule, status): every answer of an ``@http`` entrypoint
  (``shared/http.py``): the gateway and the storage data plane.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Histogram, start_http_server

# Jobs take from well under a second (a small export) to many minutes (a large import with media).
_JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

JOBS = Counter("eventport_jobs", "Job deliveries by kind and state (started, success, failure).", ["kind", "state"])
JOB_DURATION = Histogram("eventport_job_duration_seconds", "Seconds from taking a job to publishing its outcome.",
                         ["kind", "state"], buckets=_JOB_BUCKETS)
JOB_QUEUE_LAG = Histogram("eventport_job_queue_lag_seconds",
                          "Seconds from a job's request to a worker starting it (second resolution).", ["kind"],
                          buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
MAILS = Counter("eventport_mails", "Outcomes of mail delivery attempts (sent, failed, retried, uncertain).",
                ["outcome"])
WEBHOOK_DELIVERIES = Counter("eventport_webhook_deliveries",
                             "Outcomes of webhook delivery attempts (delivered, failed, retried).", ["outcome"])
HTTP_REQUESTS = Counter("eventport_http_requests", "HTTP answers by method, route rule and status.",
                        ["method", "route", "status"])

_lock = threading.Lock()
_started: dict[int, object] = {}


def serve(port: int, address: str = "0.0.0.0") -> bool:
    """Expose the metrics on ``port`` (0: not at all); a second call for the same port does nothing.

    True when this call started the server. prometheus_client serves from a thread (a greenthread under nameko's
    eventlet patching): a scrape is answered between the workers' own switches.
    """
    if port <= 0:
        return False
    with _lock:
        if port in _started:
            return False
        _started[port] = start_http_server(port, addr=address)
        return True
