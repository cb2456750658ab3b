"""Rolling restarts lose and duplicate nothing: the drain of shared/drain.py, on the real services.

- Every service in turn (storage, importer, exporter, mailer, gateway) gets a second instance
  (``Stack.add(service, same_port_as=service)``: the HTTP services' new instance binds the old one's port, so clients
  keep their URL); once it consumes (and listens), a wave of jobs is submitted and taken (the broker alternates
  between the two instances, so the old one holds some), then the old instance gets SIGTERM and must exit by itself
  (code 0) after draining. Exports fetch their media from a slow local host (seconds each), imports read an archive
  of a larger event. The deadline is generous: nothing is handed back. At the end every task is SUCCESS, reported
  once, started once, mailed once, and the broker redelivered nothing on any queue.
- A job still running at a short deadline is handed back: no FAILURE, the lease not counted as a lost worker, and
  the new instance runs it once more to SUCCESS.
- A mail being sent when the mailer gets SIGTERM is acked over a connection that stays open (nameko's own stop
  closed it within a second, and the event was delivered again).
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from types import SimpleNamespace

from nameko.standalone.events import event_dispatcher

from services.api_gateway.dependencies import MAIL_QUEUES
from shared import contracts
from shared.models.jobs import JobLease
from tests.e2e.test_mailer_e2e import completed_payload
from tests.support.e2e import TERMINAL, stack_for
from tests.support.event_tap import EventTap
from tests.support.import_helpers import export_archive, submit_ok, zip_members
from tests.support.media_host import SlowMediaHost
from tests.support.rabbit import connection_ports, consumer_ports, queue_stats
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_until
from tools.stack import Stack

ORDER = ("storage", "importer", "exporter", "mailer", "api_gateway")
WAVE = (4, 2)  # exports, imports per service restarted: 5 x 6 = 30 jobs
MEDIA_DELAY = 2.0  # seconds per media GET: 12 media, 4 at once, ~6 s per export
DRAIN_DEADLINE = "120"


def holds_for(what: str, check: Callable[[], object], seconds: float) -> None:
    """``check`` stays true for ``seconds`` (what must not happen is watched for that long)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what}: no longer after {seconds - (deadline - time.monotonic()):.1f} s"
        time.sleep(0.2)


def ready(stack: Stack, name: str, vhost: str) -> bool:
    """Consuming from the broker (one of its connections is a listed consumer) and, for HTTP services, listening on
    its address (the port it shares with the instance it replaces)."""
    assert stack.running(name), f"{name} exited:{stack.log_tail(name)}"
    address = stack.address(name)
    if address is not None and int(address.rsplit(":", 1)[1]) not in stack.local_ports(name, listening=True):
        return False
    return bool(stack.local_ports(name) & consumer_ports(vhost))


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
        tasks: dict[str, str] = {}  # task URL -> kind
        for service in ORDER:
            new = stack.add(service, same_port_as=service)
            assert stack.address(new) == stack.address(service)  # HTTP: the URL clients use
            wait_until(f"{new} ready", lambda new=new: ready(stack, new, run.vhost), 90)
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


def test_a_job_past_the_drain_deadline_is_handed_back_and_run_once_more_elsewhere(tmp_path):
    with closing(SlowMediaHost(3.0)) as media, stack_for(
            tmp_path, {"organizer": False}, MEDIA_ALLOW_HOSTS=f"127.0.0.1:{media.port}", MEDIA_TIMEOUT="30",
            DRAIN_DEADLINE="1") as run:
        event_id = run.event("organizer", sessions=14, media_base_url=media.base_url)  # 12 media: ~9 s
        stack = run.start()
        tap = EventTap(run.env.env["AMQP_URI"], contracts.EXPORTER)
        client = run.client("organizer")
        r = client.post(f"/v1/events/{event_id}/export/json", json={"image": True})
        assert r.status_code == 202, r.text
        task_url = r.json()["task_url"]
        task_id = task_url.rsplit("/", 1)[1]
        tap.wait_for(task_id, contracts.EXPORT_STARTED)  # on the only exporter
        new = stack.add("exporter")
        wait_until("new exporter ready", lambda: ready(stack, new, run.vhost), 90)
        started = time.monotonic()
        assert stack.stop("exporter", timeout=60) == 0
        assert time.monotonic() - started < 20  # the deadline, not the job, ended the drain
        task = client.wait_task(task_url, timeout=120)
        assert task["state"] == "SUCCESS", task
        assert len(tap.of(task_id, contracts.EXPORT_STARTED)) == 2  # handed back, run again by the new instance
        assert len(tap.of(task_id, contracts.EXPORT_COMPLETED)) == 1
        assert tap.of(task_id, contracts.EXPORT_FAILED) == []
        with run.env.db() as session:
            lease = session.get(JobLease, task_id)
        assert lease.deliveries == 1  # a hand-back is not a lost worker
        log = (run.env.var_dir / "log" / "exporter.log").read_text()
        assert f"export {task_id}: handed back unfinished" in log


def test_a_mail_being_sent_when_the_mailer_gets_sigterm_is_acked_not_redelivered(tmp_path):
    # nameko's own stop closed the mailer's broker connection at once (it has no RPC reply queue holding it open):
    # the event went back to the queue and the next mailer got it again while the first was still sending.
    with SmtpServer(tmp_path / "smtp") as smtp, stack_for(tmp_path, {"organizer": False}, SMTP_PORT=str(smtp.port),
                                                           DRAIN_DEADLINE=DRAIN_DEADLINE) as run:
        event_id = run.event("organizer", sessions=2)
        stack = run.start()
        payload = completed_payload(SimpleNamespace(users=run.users, event_id=event_id))
        queue = MAIL_QUEUES[(contracts.EXPORTER, contracts.EXPORT_COMPLETED)]
        smtp.set_mode("stall_rcpt")
        event_dispatcher({"AMQP_URI": run.env.env["AMQP_URI"], "serializer": "json"})(
            contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
        smtp.wait_log("RCPT stalled organizer@example.org")
        new = stack.add("mailer")
        wait_until("new mailer ready", lambda: ready(stack, new, run.vhost), 90)
        old = stack.processes["mailer"]
        consuming = stack.local_ports("mailer") & consumer_ports(run.vhost, queue)
        assert consuming
        old.send_signal(signal.SIGTERM)
        wait_until("old mailer's consumer cancelled", lambda: not consuming & consumer_ports(run.vhost, queue), 30)
        # nameko's own stop closed the consumer's connection on the consumer loop's next turn (within 1 s):
        # watched for 5 s, it must stay open while the mail is being sent.
        holds_for("old mailer's connection open", lambda: consuming & connection_ports(run.vhost), 5)
        smtp.set_mode("accept")  # only now can its mail go out
        assert stack.stop("mailer", timeout=60) == 0
        assert len(smtp.wait_messages(payload["task_id"])) == 1
        wait_until("the event acked", lambda: queue_stats(run.vhost).get(queue, {}).get("ack", 0) >= 1, 30)
        assert queue_stats(run.vhost)[queue].get("redeliver", 0) == 0
