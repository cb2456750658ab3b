"""Polling under export load: many exports at once while many clients poll their tasks.

    python -m bench.poll_bench [--exports 20] [--clients 200] [--sessions 5000] [--interval 0.1] [--database-url URL]
                               [--client raw|requests]

One realistic event (``bench/realistic.py``: FOSSASIA16 cycled to ``--sessions``) is loaded into a fresh database,
the five services start as ``nameko run`` processes, then ``--exports`` exports of it are requested at once and
``--clients`` clients (green threads of this process, each with its own HTTP connection) poll
``GET /v1/tasks/<id>`` of one of them every ``--interval`` seconds until it ends (their first polls spread over
one interval). Clients on this machine take CPU from the services they measure (real clients are elsewhere):
``--client raw`` (the default) polls with a minimal HTTP/1.1 keep-alive client on a green socket, a few tens of
microseconds of CPU per poll; ``--client requests`` uses ``requests`` (about a millisecond).

Reported: whether every export finished (and none failed), the poll latency percentiles (client side, request sent
to body read), the polls per second, the time until the last export ended, the gateway's CPU seconds, how long it
waited for a CPU while it had work, and the CPU seconds of this process (the clients). The machine is shared: the
load average is printed beside the figures.
"""

import argparse
import json
import os
import statistics
import sys
import time
from urllib.parse import urlsplit

import eventlet
import requests

from bench import realistic
from bench.common import NO_MEDIA, bench_stack, create_user, request_export, tree_cpu
from shared.archive.loader import load_archive

TIMEOUT = 900.0
TARGET_P99 = 0.050


def run_queue_seconds(pid: int) -> float | None:
    """Seconds the process's main thread spent runnable but waiting for a CPU (Linux schedstat), or ``None``.

    Beside the latencies it tells a gateway that was slow from one that was not given a CPU (a shared machine)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RequestsPoller:
    """One client on ``requests`` (its own connection)."""

    def __init__(self, url: str, authorization: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = authorization

    def poll(self) -> tuple[int, bytes]:
        r = self.session.get(self.url, timeout=60)
        return r.status_code, r.content


class RawPoller:
    """One client as a minimal HTTP/1.1 keep-alive GET on a green socket: the request bytes are built once, the
    answer is read by its Content-Length (the gateway always sends one for JSON)."""

    def __init__(self, url: str, authorization: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {authorization}\r\n"
                        "Accept: application/json\r\n\r\n").encode()
        self.sock: eventlet.greenio.GreenSocket | None = None
        self.pending = b""

    def poll(self) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = eventlet.connect(self.address)
            self.pending = b""
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.pending:
            self.pending += self._recv()
        head, _, rest = self.pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self._recv()
        body, self.pending = rest[:length], rest[length:]
        if any(line.lower().replace(b" ", b"") == b"connection:close" for line in lines[1:]):
            self.sock.close()
            self.sock = None
        return status, body

    def _recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("the gateway closed the connection in the middle of an answer")
        return data


POLLERS = {"raw": RawPoller, "requests": RequestsPoller}
TIMELINE: list[tuple[float, float]] = []  # (perf_counter at send, latency) of every poll, for --timeline


def print_timeline(started: float) -> None:
    """Per second of the run: polls sent, their p50 and max latency (where the slow ones cluster)."""
    seconds: dict[int, list[float]] = {}
    for sent, latency in TIMELINE:
        seconds.setdefault(int(sent - started), []).append(latency)
    for second in sorted(seconds):
        values = seconds[second]
        print(f"  t={second:3d}s polls {len(values):4d} p50 {percentile(values, 0.5) * 1000:5.0f} ms "
              f"max {max(values) * 1000:5.0f} ms")


def poll_until_done(poller: RawPoller | RequestsPoller, url: str, interval: float, latencies: list[float],
                    states: dict[str, str], deadline: float, phase: float) -> None:
    eventlet.sleep(phase)  # clients do not all start in the same instant
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, content = poller.poll()
        body = json.loads(content)
        latencies.append(time.perf_counter() - started)
        TIMELINE.append((started, latencies[-1]))
        if status != 200:
            raise RuntimeError(f"poll answered {status}: {content[:200]!r}")
        if body["state"] != "WAITING":
            states[url] = body["state"]
            return
        eventlet.sleep(interval)
    states[url] = "TIMEOUT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", type=int, default=20)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between two polls of one client")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL (see bench/export_bench.py)")
    parser.add_argument("--client", choices=sorted(POLLERS), default="raw",
                        help="how the polling clients speak HTTP (see above)")
    parser.add_argument("--timeline", action="store_true", help="print the latencies second by second")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    with bench_stack("poll_bench_", args.database_url, keep=args.keep,
                     extra_env={"QUOTA_JOBS_IN_FLIGHT": "0"}) as bench:
        db, stack, factory = bench.db, bench.stack, bench.factory
        owner = create_user(factory)
        archive = realistic.make_archive(args.sessions, bench.work / "event.zip")
        with factory() as session:
            event_id = load_archive(session, archive.path, keep_ids=False, owner_user_id=owner).event_id
            session.commit()
        client = bench.start()
        gateway = stack.processes["api_gateway"].pid
        load = os.getloadavg()[0]
        cpu_before = tree_cpu(gateway)
        clients_before = time.process_time()
        waited_before = run_queue_seconds(gateway)
        started = time.perf_counter()
        tasks = []
        for _ in range(args.exports):
            tasks.append(request_export(client, event_id, NO_MEDIA))
        latencies: list[float] = []
        states: dict[str, str] = {}
        deadline = time.monotonic() + TIMEOUT
        pool = eventlet.GreenPool(args.clients)
        authorization = client.http.headers["Authorization"]
        for i in range(args.clients):
            url = client.base_url + tasks[i % len(tasks)]
            pool.spawn(poll_until_done, POLLERS[args.client](url, authorization), url, args.interval, latencies,
                       states, deadline, args.interval * i / args.clients)
        pool.waitall()
        seconds = time.perf_counter() - started
        cpu = tree_cpu(gateway) - cpu_before
        clients_cpu = time.process_time() - clients_before
        waited_after = run_queue_seconds(gateway)
        waited = None if waited_before is None or waited_after is None else waited_after - waited_before
        final = {url: client.get(url).json()["state"] for url in tasks}
    done = sum(1 for state in final.values() if state == "SUCCESS")
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(f"{args.exports} exports of {args.sessions:,} sessions, {args.clients} {args.client} clients polling every "
          f"{args.interval * 1000:.0f} ms, {db.kind}, load {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"finished {done}/{args.exports} ({', '.join(sorted(set(final.values())))}) in {seconds:.1f} s; "
          f"{len(latencies)} polls, {len(latencies) / seconds:.0f}/s; latency p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} "
          f"ms; gateway CPU {cpu:.1f} s, runnable but waiting for a CPU "
          f"{'unknown' if waited is None else f'{waited:.1f} s'}; clients' CPU {clients_cpu:.1f} s")
    print(f"p99 {'meets' if p99 < TARGET_P99 else 'misses'} the target < {TARGET_P99 * 1000:.0f} ms")
    if args.timeline:
        print_timeline(started)
    return 0 if done == args.exports else 1


if __name__ == "__main__":
    sys.exit(main())
