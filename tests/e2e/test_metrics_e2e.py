"""Operations end to end: Prometheus counters of running services move after a real export, the exporter's JSON
log lines carry the task id, and the exec probe answers 0 for a live service and 1 for one that does not answer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, free_port
from tests.support.e2e import stack_for
from tools.stack import Stack


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the process's metrics: (name, sorted labels) -> value."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def probe(env: dict[str, str], service: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.probe", service, "--timeout", str(timeout)], cwd=REPO,
                          env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)


def test_metrics_logs_and_probe_of_a_real_export(tmp_path) -> None:
    with stack_for(tmp_path, {"organizer": False}, LOG_FORMAT="json") as run:
        event_id = run.event("organizer", sessions=5)
        run.start(("storage", "importer", "webhooks"))
        ports = {name: free_port() for name in ("exporter", "mailer", "api_gateway")}
        for name, port in ports.items():  # one metrics port per process: they share this host
            stack = Stack(env={**run.env.env, "METRICS_PORT": str(port)}, log_dir=run.env.var_dir / "log")
            run.stacks.append(stack)
            stack.start(name)
        run.stacks[-1].wait_healthy(timeout=90)

        before = scrape(ports["exporter"])
        client = run.client("organizer")
        r = client.post(f"/v1/events/{event_id}/export/json", json={})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_url"].rstrip("/").split("/")[-1]
        task = client.wait_task(r.json()["task_url"])
        assert task["state"] == "SUCCESS", task

        # The outcome is counted right after it is published: the task may read SUCCESS a moment earlier.
        eventually(lambda: value(scrape(ports["exporter"]), "eventport_jobs_total", kind="export", state="success") > 0)
        after = scrape(ports["exporter"])
        for state in ("started", "success"):
            assert value(after, "eventport_jobs_total", kind="export", state=state) == \
                value(before, "eventport_jobs_total", kind="export", state=state) + 1
        assert value(after, "eventport_job_duration_seconds_count", kind="export", state="success") == 1
        assert value(after, "eventport_job_queue_lag_seconds_count", kind="export") == 1

        gateway = scrape(ports["api_gateway"])
        assert value(gateway, "eventport_http_requests_total", method="POST",
                     route="/v1/events/<int:event_id>/export/<format>", status="202") == 1
        assert value(gateway, "eventport_http_requests_total", method="GET", route="/v1/tasks/<task_id>",
                     status="200") >= 1
        # No mail server listens on SMTP_PORT: the completion mail's first attempt fails and is scheduled again.
        eventually(lambda: value(scrape(ports["mailer"]), "eventport_mails_total", outcome="retried") >= 1)

        lines = [json.loads(line) for line in (run.env.var_dir / "log" / "exporter.log").read_text().splitlines()
                 if line.startswith("{")]
        mine = [line for line in lines if task_id in line["message"]]
        assert mine and all(line.get("task_id") == task_id for line in mine), mine
        assert any("started" in line["message"] for line in mine)

        for service in ("exporter", "storage", "mailer"):
            answered = probe(run.env.env, service, 5)
            assert answered.returncode == 0, answered.stderr
        missing = probe(run.env.env, "no_such_service", 1)
        assert missing.returncode == 1 and "no answer within 1 s" in missing.stderr
        broker_down = probe({**run.env.env, "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}, "exporter", 2)
        assert broker_down.returncode == 1 and "not healthy" in broker_down.stderr

        # Liveness of the HTTP services: answered by the server itself, outside the routes and their metrics.
        live = requests.get(run.url + "/livez", timeout=5)
        assert live.status_code == 200 and live.json() == {"status": "alive"}
        assert requests.get(run.storage + "/livez", timeout=5).status_code == 200
        assert not [k for k in scrape(ports["api_gateway"]) if ("route", "/livez") in k[1]]
        assert requests.get(run.url + "/no/such/route", timeout=5).status_code == 404
        assert value(scrape(ports["api_gateway"]), "eventport_http_requests_total", method="GET", route="<unmatched>",
                     status="404") == 1
