"""Rolling restart benchmark: what a restart of every exporter, one at a time, does to the exports in flight.

    python -m bench.rolling_restart [--jobs 30] [--exporters 2] [--media-delay 2.5] [--drain-deadline 120]
                                    [--database-url URL] [--keep]

The five services run as in ``bench/common.py`` but the exporter runs ``--exporters`` instances
(``Stack.scale``). Exports fetch their media (``--media`` files per event) from a slow local media server
(each GET answers after ``--media-delay`` seconds), so each job lasts seconds and most of that is waiting. Once
``--jobs`` exports are queued and some have started, every exporter is replaced in turn: a new instance is started
and is consuming, then the old one gets SIGTERM and is waited for (its drain time is reported). Then every task is
waited for.

Reported, from a tap on the exporter's events, the tasks' final states, the ``job_leases`` table and the broker's
counters of the request queue:

- **redelivered**: requests the broker delivered again (the queue's ``redeliver`` counter), and tasks whose
  ``export_started`` was published more than once (the job ran again);
- **lost**: tasks not ``SUCCESS`` at the end (still waiting or failed);
- **duplicated**: tasks with more than one ``export_completed``.
"""

import argparse
import sys
import time
from collections import Counter
from contextlib import closing

import sqlalchemy as sa

from bench.common import Client, bench_stack, create_user, log, render_table, request_export, write_results
from shared.contracts import EXPORT_COMPLETED, EXPORT_FAILED, EXPORT_REQUEST_QUEUE, EXPORT_STARTED, EXPORTER
from shared.models.jobs import JobLease
from tests.support.event_tap import EventTap
from tests.support.media_host import SlowMediaHost
from tests.support.rabbit import consumer_ports, consumers, queue_info
from tests.support.waiting import wait_until
from tools.stack import REPO, Stack
from tools.synthetic import create_synthetic_event

JSON_OUT = REPO / "var" / "bench" / "rolling_restart.json"
TERMINAL = ("SUCCESS", "FAILURE")


def rolling_restart(stack: Stack, service: str, vhost: str, queue: str, *, stop_timeout: float) -> list[dict]:
    """Replace every running instance of ``service``: start one (``Stack.add``, on the old one's port if it has one),
    wait until it consumes, SIGTERM the old one and wait for its exit. One record per replaced instance."""
    records = []
    for old in [name for name in stack.instances(service) if stack.running(name)]:
        new = stack.add(service, same_port_as=old)
        wait_until(f"{new} consuming", lambda new=new: stack.local_ports(new) & consumer_ports(vhost, queue), 90)
        started = time.monotonic()
        code = stack.stop(old, timeout=stop_timeout)
        records.append({"stopped": old, "replaced_by": new, "exit_code": code,
                        "stop_seconds": round(time.monotonic() - started, 1)})
        log(f"  {old} -> {new}: exit {code} after {records[-1]['stop_seconds']} s")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling_restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="exports submitted (default 30)")
    parser.add_argument("--exporters", type=int, default=2, help="exporter instances (default 2)")
    parser.add_argument("--media", type=int, default=16, help="media files per export (default 16)")
    parser.add_argument("--media-delay", type=float, default=2.5, help="seconds each media GET takes (default 2.5)")
    parser.add_argument("--drain-deadline", type=float, default=120, help="DRAIN_DEADLINE of the services")
    parser.add_argument("--stop-timeout", type=float, default=None,
                        help="seconds a SIGTERM'd exporter gets before SIGKILL (default: drain deadline + 60)")
    parser.add_argument("--label", default="", help="a name for this run in the results (e.g. before / after)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (see bench/export_bench.py)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    stop_timeout = args.stop_timeout if args.stop_timeout is not None else args.drain_deadline + 60
    sessions = max(2, 2 * (args.media - 5))  # the synthetic event: 5 sponsor logos and one photo per 2 sessions

    with closing(SlowMediaHost(args.media_delay)) as media, bench_stack(
            "rolling_restart_", args.database_url, keep=args.keep,
            extra_env={"MEDIA_ALLOW_HOSTS": f"127.0.0.1:{media.port}", "MEDIA_TIMEOUT": "60",
                       "DRAIN_DEADLINE": f"{args.drain_deadline:g}", "QUOTA_JOBS_IN_FLIGHT": "0"}) as bench:
        owner = create_user(bench.factory)
        with bench.factory() as session:
            event_id = create_synthetic_event(session, sessions=sessions, owner_user_id=owner,
                                              media_base_url=media.base_url)
            session.commit()
        bench.stack.start_all()
        bench.stack.scale(EXPORTER, args.exporters)
        bench.stack.wait_healthy(timeout=90)
        wait_until("exporters up", lambda: consumers(bench.vhost, EXPORT_REQUEST_QUEUE) >= args.exporters, 60)
        client = Client(bench.env["GATEWAY_URL"])
        tap = EventTap(bench.env["AMQP_URI"], EXPORTER)
        body = {"image": True}
        begun = time.monotonic()
        task_urls = [request_export(client, event_id, body) for _ in range(args.jobs)]
        log(f"{args.jobs} exports queued ({args.media} media x {args.media_delay:g} s each)")
        wait_until("exports started", lambda: sum(t == EXPORT_STARTED for t, _ in tap.drain()) >= min(args.jobs, 5),
                   60)
        restarts = rolling_restart(bench.stack, EXPORTER, bench.vhost, EXPORT_REQUEST_QUEUE,
                                   stop_timeout=stop_timeout)

        def all_terminal():
            states = [client.get(url).json()["state"] for url in task_urls]
            return states if all(s in TERMINAL for s in states) else None

        try:
            states = wait_until("every task terminal", all_terminal, 600, pause=1)
        except TimeoutError:
            states = [client.get(url).json()["state"] for url in task_urls]
        elapsed = time.monotonic() - begun
        time.sleep(6)  # the broker's queue counters are sampled every 5 s
        stats = (queue_info(bench.vhost, EXPORT_REQUEST_QUEUE) or {}).get("message_stats", {})
        events = tap.drain()
        task_ids = [url.rsplit("/", 1)[1] for url in task_urls]
        count = {kind: Counter(p["task_id"] for t, p in events if t == kind)
                 for kind in (EXPORT_STARTED, EXPORT_COMPLETED, EXPORT_FAILED)}
        with bench.engine.connect() as conn:
            leases = dict(conn.execute(sa.select(JobLease.task_id, JobLease.deliveries)).all())
        logs = "".join(p.read_text(errors="replace") for p in (bench.work / "var" / "log").glob("exporter*.log"))
    result = {
        "label": args.label,
        "jobs": args.jobs, "exporters": args.exporters, "media": args.media, "media_delay": args.media_delay,
        "drain_deadline": args.drain_deadline, "seconds": round(elapsed, 1), "restarts": restarts,
        "redelivered_by_broker": stats.get("redeliver", 0),
        "started_more_than_once": sum(1 for t in task_ids if count[EXPORT_STARTED][t] > 1),
        "redelivery_waited_for_live_run": logs.count("is being worked on by another run"),
        "lease_taken_over": sum(1 for t in task_ids if leases.get(t, 0) > 1),
        "handed_back": logs.count("handed back unfinished"),
        "lost": sum(1 for s in states if s != "SUCCESS"),
        "failed": sum(1 for t in task_ids if count[EXPORT_FAILED][t]),
        "duplicated": sum(1 for t in task_ids if count[EXPORT_COMPLETED][t] > 1),
        "states": dict(Counter(states)),
    }
    rows = [[k, str(result[k])] for k in ("redelivered_by_broker", "started_more_than_once",
                                          "redelivery_waited_for_live_run", "lease_taken_over", "handed_back",
                                          "lost", "failed", "duplicated", "seconds")]
    rows += [[f"stop {r['stopped']}", f"{r['stop_seconds']} s (exit {r['exit_code']})"] for r in restarts]
    print(render_table(["rolling restart " + (args.label or ""), "value"], rows, left=True))
    out = JSON_OUT if not args.label else JSON_OUT.with_name(f"rolling_restart_{args.label}.json")
    write_results(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
