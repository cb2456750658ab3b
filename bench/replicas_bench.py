"""Throughput by replica count: exports per minute with 1, 2 and 4 exporters, side by side in one run.

    python -m bench.replicas_bench [--replicas 1,2,4] [--media 20] [--media-delay 0.2] [--max-workers 4]
                                   [--rounds 6] [--database-url URL] [--keep]

Exports whose time is mostly waiting: every export fetches ``--media`` files from a slow local media server (each
GET answers after ``--media-delay`` seconds), ``MEDIA_CONCURRENCY`` (4 unless set) at a time, so one export waits
about ``media / MEDIA_CONCURRENCY x media-delay`` seconds. Each exporter runs at most ``--max-workers`` exports at
once (its nameko ``max_workers``; the other services keep the default 10). One stack serves every run; before each,
the exporters are replaced by ``N`` fresh ones (``Stack.scale``), then ``rounds x N x max_workers`` exports
are posted at once and the time runs from the first POST until the last ``export_completed`` (a tap on the
exporter's events); "steady" is the rate between the 10th and the 90th percentile of the completions (no ramp-up
while the POSTs go out, no tail). Every task is checked SUCCESS at the end. Expected: about N times the throughput
of one exporter, until something shared (the gateway, storage, the CPU) is the limit: the CPU seconds each service
used during the run are printed beside it (load: the 1-minute load average at its end).

Results: a table on stdout and ``var/bench/replicas.json``.
"""

import argparse
import os
import sys
import time
from contextlib import closing

from bench.common import (
    Client,
    bench_stack,
    create_user,
    log,
    machine,
    render_table,
    request_export,
    tree_cpu,
    write_results,
)
from shared.contracts import EXPORT_COMPLETED, EXPORT_REQUEST_QUEUE, EXPORTER
from tests.support.event_tap import EventTap
from tests.support.media_host import SlowMediaHost
from tests.support.rabbit import consumer_ports
from tests.support.waiting import wait_until
from tools.stack import REPO, SERVICES
from tools.synthetic import create_synthetic_event

JSON_OUT = REPO / "var" / "bench" / "replicas.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,4", help="exporter counts to compare (default 1,2,4)")
    parser.add_argument("--media", type=int, default=20, help="media files per export (default 20)")
    parser.add_argument("--media-delay", type=float, default=0.2, help="seconds each media GET takes (default 0.2)")
    parser.add_argument("--max-workers", type=int, default=4, help="each exporter's max_workers (default 4)")
    parser.add_argument("--rounds", type=int, default=6, help="exports per worker slot in each run (default 6)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (see bench/export_bench.py)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    replicas = sorted({int(n) for n in args.replicas.split(",") if n.strip()})
    concurrency = int(os.environ.get("MEDIA_CONCURRENCY") or 4)
    sessions = max(2, 2 * (args.media - 5))  # 5 sponsor logos and one speaker photo per 2 sessions
    runs = []
    with closing(SlowMediaHost(args.media_delay)) as media, bench_stack(
            "replicas_bench_", args.database_url, keep=args.keep,
            extra_env={"MEDIA_ALLOW_HOSTS": f"127.0.0.1:{media.port}", "MEDIA_TIMEOUT": "60",
                       "MEDIA_CONCURRENCY": str(concurrency), "QUOTA_JOBS_IN_FLIGHT": "0"}) as bench:
        owner = create_user(bench.factory)
        with bench.factory() as session:
            event_id = create_synthetic_event(session, sessions=sessions, owner_user_id=owner,
                                              media_base_url=media.base_url)
            session.commit()
        bench.stack.service_env[EXPORTER] = {"MAX_WORKERS": str(args.max_workers)}
        bench.stack.start_all(tuple(s for s in SERVICES if s != EXPORTER))
        tap = EventTap(bench.env["AMQP_URI"], EXPORTER)
        for n in replicas:
            for old in bench.stack.instances(EXPORTER):
                bench.stack.stop(old, timeout=60)
            for name in bench.stack.scale(EXPORTER, n):
                wait_until(f"{name} consuming", lambda name=name: bench.stack.local_ports(name)
                           & consumer_ports(bench.vhost, EXPORT_REQUEST_QUEUE), 90, pause=0.5)
            bench.stack.wait_healthy(timeout=90)
            client = Client(bench.env["GATEWAY_URL"])
            jobs = args.rounds * n * args.max_workers
            tap.drain()
            seen = len(tap.seen)
            pids = {name: proc.pid for name, proc in bench.stack.processes.items()}
            cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
            started = time.monotonic()
            urls = [request_export(client, event_id, {"image": True}) for _ in range(jobs)]
            ids = {url.rsplit("/", 1)[1] for url in urls}

            finished: dict[str, float] = {}  # task id -> when its export_completed was first seen

            def done(ids=ids, seen=seen, finished=finished):
                now = time.monotonic()
                for t, p in tap.drain()[seen:]:
                    if t == EXPORT_COMPLETED and p["task_id"] in ids:
                        finished.setdefault(p["task_id"], now)
                return len(finished) == len(ids)

            wait_until(f"{jobs} exports with {n} exporter(s)", done, 900)
            seconds = time.monotonic() - started
            cpu = {name: tree_cpu(pid) - cpu_before[name] for name, pid in pids.items()}
            cpu_by_service = {"exporters": sum(v for k, v in cpu.items() if k.startswith(EXPORTER))}
            cpu_by_service.update({k: v for k, v in cpu.items() if not k.startswith(EXPORTER)})
            states = {client.get(url).json()["state"] for url in urls}
            if states != {"SUCCESS"}:
                raise RuntimeError(f"{n} exporter(s): task states {states}")
            times = sorted(finished.values())
            first, last = times[len(times) // 10], times[len(times) * 9 // 10 - 1]
            steady = (len(times) * 9 // 10 - len(times) // 10 - 1) / (last - first) * 60
            runs.append({"exporters": n, "jobs": jobs, "seconds": round(seconds, 2),
                         "jobs_per_minute": round(jobs / seconds * 60, 1), "steady_per_minute": round(steady, 1),
                         "load": round(os.getloadavg()[0], 2),
                         "cpu_seconds": {k: round(v, 1) for k, v in cpu_by_service.items()}})
            log(f"  {n} exporter(s): {jobs} exports in {seconds:.1f} s")
    base = runs[0]["jobs_per_minute"] / runs[0]["exporters"]
    steady_base = runs[0]["steady_per_minute"] / runs[0]["exporters"]
    rows = [[str(r["exporters"]), str(r["jobs"]), f"{r['seconds']:.1f}", f"{r['jobs_per_minute']:.0f}",
             f"{r['jobs_per_minute'] / base:.2f}x", f"{r['steady_per_minute']:.0f}",
             f"{r['steady_per_minute'] / steady_base:.2f}x", f"{r['load']:.1f}",
             ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_seconds"].items())] for r in runs]
    limits = (f"limits: exporter max_workers={args.max_workers}, MEDIA_CONCURRENCY={concurrency}; "
              f"{args.media} media x {args.media_delay:g} s per export")
    print(limits)
    header = ["exporters", "jobs", "seconds", "jobs/min", "vs 1", "steady jobs/min", "vs 1", "load",
              "CPU seconds during the run"]
    print(render_table(header, rows))
    write_results(JSON_OUT, {"machine": machine(), "limits": limits, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
