"""A rolling restart of every service while jobs run loses and duplicates nothing (the drain of shared/drain.py).

Each service in turn (storage, importer, exporter, mailer, gateway) gets a second instance (``tools/instances.py``;
the HTTP services share their port), a wave of jobs is submitted while it starts, and once it consumes (and
listens) the old instance gets SIGTERM and must exit by itself (code 0) after draining. Exports fetch their media
from a slow local host (seconds per export), imports read an archive of a larger event, so the old instance has
work in flight when it is stopped. The drain deadline is generous: nothing may be handed back.

At the end every task is SUCCESS, reported once (one ``<kind>_completed``, no ``<kind>_failed``), started once,
mailed once, and the broker redelivered nothing on any queue (on nameko's own stop it redelivers whatever the
mailer or storage was handling: their acks were lost).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing

from shared import contracts
from tests.support.e2e import TERMINAL, stack_for
from tests.support.event_tap import EventTap
from tests.support.import_helpers import export_archive, submit_ok, zip_members
from tests.support.media_host import SlowMediaHost
from tests.support.rabbit import consumer_ports, queue_stats
from tests.support.smtp_server import SmtpServer
from tools.instances import Instance, Instances

ORDER = ("storage", "importer", "exporter", "mailer", "api_gateway")
WAVE = (4, 2)  # exports, imports per service restarted: 5 x 6 = 30 jobs
MEDIA_DELAY = 2.0  # seconds per media GET: 12 media, 4 at once, ~6 s per export
DRAIN_DEADLINE = "120"


def wait_until(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.2)


def ready(instance: Instance, vhost: str, http_port: int | None) -> bool:
    """Consuming from the broker (one of its connections is a listed consumer) and, for HTTP services, listening."""
    assert instance.proc.poll() is None, f"{instance.name} exited: {instance.log_path.read_text()[-3000:]}"
    if http_port is not None and http_port not in instance.local_ports(listening=True):
        return False
    return bool(instance.local_ports() & consumer_ports(vhost))


def test_rolling_restart_of_every_service_loses_and_duplicates_nothing(tmp_path):
    with closing(SlowMediaHost(MEDIA_DELAY)) as media, SmtpServer(tmp_path / "smtp") as smtp, stack_for(
            tmp_path, {"organizer": False}, SMTP_PORT=str(smtp.port), MEDIA_ALLOW_HOSTS=f"127.0.0.1:{media.port}",
            MEDIA_TIMEOUT="30", DRAIN_DEADLINE=DRAIN_DEADLINE, QUOTA_JOBS_IN_FLIGHT="0") as run:
        slow_event = run.event("organizer", sessions=14, media_base_url=media.base_url)  # 12 media
        big_event = run.event("organizer", sessions=4000)
        stack = run.start()
        taps = {kind: EventTap(run.env.env["AMQP_URI"], service)
                for kind, service in (("export", contracts.EXPORTER), ("import", contracts.IMPORTER))}
        client = run.client("organizer")
        archive = zip_members(export_archive(client, big_event))
        ports = {"api_gateway": int(run.url.rsplit(":", 1)[1]), "storage": int(run.storage.rsplit(":", 1)[1])}
        instances = Instances(run.env.env, run.env.var_dir / "log")
        tasks: dict[str, str] = {}  # task URL -> kind
        try:
            for service in ORDER:
                new = instances.start(service)
                wait_until(f"{new.name} ready", lambda new=new, s=service: ready(new, run.vhost, ports.get(s)), 90)
                wave = []
                for _ in range(WAVE[0]):
                    r = client.post(f"/v1/events/{slow_event}/export/json", json={"image": True})
                    assert r.status_code == 202, r.text
                    wave.append((r.json()["task_url"], "export"))
                wave += [(submit_ok(client, archive, f"{service}-{i}.zip"), "import") for i in range(WAVE[1])]
                tasks.update(wave)
                # Every job of the wave taken (the broker alternates between the two instances of the exporter and
                # of the importer, so the old one holds some): then the old instance is stopped.
                for url, kind in wave:
                    taps[kind].wait_for(url.rsplit("/", 1)[1], f"{kind}_started", timeout=60)
                old = stack.processes[service]
                stack.stop(service, timeout=150)  # SIGTERM; SIGKILL only if it never exits
                assert old.returncode == 0, f"old {service} exited with {old.returncode}"

            def states() -> dict[str, str] | None:
                found = {url: client.get(url).json()["state"] for url in tasks}
                return found if all(s in TERMINAL for s in found.values()) else None

            final = wait_until("every task terminal", states, 240)
            ids = {url.rsplit("/", 1)[1]: kind for url, kind in tasks.items()}
            for task_id in ids:
                smtp.wait_messages(task_id, timeout=60)
            # The broker's counters lag (sampled every 5 s): wait until they count every job request acked.
            request_queues = {"export": contracts.EXPORT_REQUEST_QUEUE, "import": contracts.IMPORT_REQUEST_QUEUE}
            wait_until("queue counters up to date", lambda: all(
                queue_stats(run.vhost).get(queue, {}).get("ack", 0) >= sum(k == kind for k in ids.values())
                for kind, queue in request_queues.items()), 60)
            stats = queue_stats(run.vhost)
        finally:
            instances.stop_all()

        assert Counter(final.values()) == {"SUCCESS": len(tasks)}, final
        assert len(tasks) == 30
        for kind, tap in taps.items():
            events = tap.drain()
            mine = {t for t, k in ids.items() if k == kind}
            for event_type in (f"{kind}_started", f"{kind}_completed"):
                counts = Counter(p["task_id"] for t, p in events if t == event_type and p["task_id"] in mine)
                assert counts == dict.fromkeys(mine, 1), (event_type, counts)
            assert not [p for t, p in events if t == f"{kind}_failed"]
        for task_id in ids:
            assert len(smtp.messages(task_id)) == 1, task_id
        redelivered = {name: s["redeliver"] for name, s in stats.items() if s.get("redeliver")}
        assert redelivered == {}, redelivered
        log = run.log_text()
        assert "handed back" not in log
        drained: dict[str, int] = {}  # service -> the most workers one of its instances drained
        for m in re.finditer(r"(\w+) draining: (\d+) worker", log):
            drained[m[1]] = max(drained.get(m[1], 0), int(m[2]))
        assert drained.keys() == set(ORDER), drained
        assert drained["exporter"] >= 1, drained  # it was stopped in the middle of exports, and let them finish
