"""Export benchmark: the real services end to end against the same generator run in-process (the floor).

    python -m bench.export_bench [--sizes 500,5000,50000] [--database-url URL] [--repeats 3] [--repeats-large 2]

One throwaway RabbitMQ vhost, one temporary var directory and one fresh database (SQLite by default; with
``--database-url postgresql+psycopg2://user@host/db`` a new database is created on that server and dropped at the
end) hold one synthetic event per size, all owned by one user. The five services run as ``nameko run`` processes,
as in production (``tools/stack.py``).

Per size, ``repeats`` times (``repeats_large`` from 20,000 sessions up), alternating:

* floor: ``shared.archive.writer.generate_archive`` in this process, on the same database, no media, its chunks
  consumed by a sink that only counts bytes and updates a sha256 (what the exporter itself does before upload);
* end to end: ``POST /v1/events/{id}/export/json`` (no media), then ``GET`` the task every 20 ms; the time runs from
  the POST to the first SUCCESS seen. The exporter's RSS (process and children) is sampled every 20 ms by an OS
  thread meanwhile; its RSS right before the POST is the baseline. The CPU time each service spent is recorded too.

The best (smallest) time of each kind is reported. Outside the timed part, every end-to-end archive is downloaded
with its signed link, its size and sha256 checked against the task result, and its members checked against the
floor's (same names, and per-file sha256/size/count of ``meta`` equal to those the floor computed).

Results: a table on stdout and ``var/bench/export.json``.
"""

import eventlet

eventlet.monkey_patch()  # first: nameko clients, and anything importing ssl (docs/architecture.md fact 7)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import psutil  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from shared.archive import legacy  # noqa: E402
from shared.archive.writer import ExportReport, generate_archive  # noqa: E402
from shared.contracts import MEDIA_FLAGS  # noqa: E402
from shared.db import make_engine, make_session_factory, upgrade_to_head  # noqa: E402
from shared.media_fetcher import MediaFetcher  # noqa: E402
from shared.models import events as m  # noqa: E402
from shared.passwords import hash_password  # noqa: E402
from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost  # noqa: E402
from tools.stack import REPO, Stack  # noqa: E402
from tools.synthetic import create_synthetic_event  # noqa: E402

# The sampler must run on a real OS thread with a real sleep: a green one would only run when this process's hub
# gets a turn, not every 20 ms.
_os_threading = eventlet.patcher.original("threading")
_os_time = eventlet.patcher.original("time")

DEFAULT_SIZES = (500, 5000, 50000)
LARGE = 20000  # sizes from here on use --repeats-large
POLL_SECONDS = 0.02
SAMPLE_SECONDS = 0.02
EXPORT_TIMEOUT = 900.0
EMAIL = "bench-organizer@example.org"
PASSWORD = "bench password"
NO_MEDIA = dict.fromkeys(MEDIA_FLAGS, False)
MB = 1024 * 1024
JSON_OUT = REPO / "var" / "bench" / "export.json"
TARGET_RATIO = 1.5


# ------------------------------------------------------------------------------------------------------ measuring


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    total = 0.0
    for proc in _tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class RssSampler:
    """Peak RSS of a process tree, sampled every ``interval`` seconds on an OS thread while the block runs."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = False
        self._thread = _os_threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self._sample()
            _os_time.sleep(self.interval)

    def _sample(self) -> None:
        try:
            rss = tree_rss(self.pid)
        except psutil.NoSuchProcess:
            return
        self.peak = max(self.peak, rss)
        self.samples += 1

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self._sample()


# --------------------------------------------------------------------------------------------------------- set-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Database:
    url: str
    kind: str
    drop: Callable[[], None] | None = None


def fresh_database(var_dir: Path, server_url: str | None) -> Database:
    """A new, empty database: a SQLite file under ``var_dir``, or a new database on the given server."""
    if server_url is None:
        return Database(f"sqlite:///{var_dir / 'platform.db'}", "sqlite")
    url = sa.engine.make_url(server_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not url.database or url.database == ":memory:" or path.exists():
            raise SystemExit("--database-url: give a path to a SQLite file that does not exist yet")
        return Database(server_url, "sqlite")
    name = f"export_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    fresh = url.set(database=name).render_as_string(hide_password=False)
    return Database(fresh, url.get_backend_name(), drop)


def stack_env(var_dir: Path, database_url: str, vhost: str) -> dict[str, str]:
    return {
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "AMQP_URI": amqp_uri(vhost),
        "GATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "STORAGE_URL": f"http://127.0.0.1:{free_port()}",
        "STORAGE_DIR": str(var_dir / "storage"),
        "SECRET_KEY": f"bench-{uuid.uuid4().hex}",
    }


def create_user(factory) -> int:
    with factory() as session:
        user = m.User(email=EMAIL, password_hash=hash_password(PASSWORD), is_admin=False)
        session.add(user)
        session.commit()
        return user.id


def create_events(factory, sizes: list[int], owner: int) -> dict[int, int]:
    events = {}
    for n in sizes:
        started = time.perf_counter()
        with factory() as session:
            events[n] = create_synthetic_event(session, sessions=n, owner_user_id=owner)
            session.commit()
        log(f"  event {events[n]}: {n:,} sessions created in {time.perf_counter() - started:.1f} s")
    return events


class Client:
    """Logged-in HTTP client of the gateway (no proxies from the environment)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.trust_env = False
        r = self.http.post(base_url + "/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=30)
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.base_url + path, json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30)


# ----------------------------------------------------------------------------------------------------------- runs


@dataclass
class FloorRun:
    seconds: float
    size: int
    sha256: str
    files: dict[str, dict[str, Any]]


@dataclass
class E2ERun:
    seconds: float
    size: int
    sha256: str
    rss_before: int
    rss_peak: int
    rss_samples: int
    polls: int
    states_seen: list[str]
    cpu_seconds: dict[str, float]
    verified: bool = False


def run_floor(factory, event_id: int, root_url: str) -> FloorRun:
    report = ExportReport()
    digest = hashlib.sha256()
    size = 0
    started = time.perf_counter()
    for chunk in generate_archive(factory, event_id, dict(NO_MEDIA), fetcher=MediaFetcher(), root_url=root_url,
                                  exported_at=datetime.now(UTC), report=report):
        size += len(chunk)
        digest.update(chunk)
    seconds = time.perf_counter() - started
    return FloorRun(seconds, size, digest.hexdigest(), report.files)


def run_e2e(client: Client, stack: Stack, event_id: int) -> tuple[E2ERun, dict[str, Any]]:
    pids = {name: proc.pid for name, proc in stack.processes.items()}
    exporter = pids["exporter"]
    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    rss_before = tree_rss(exporter)
    states: list[str] = []
    polls = 0
    with RssSampler(exporter) as sampler:
        started = time.perf_counter()
        r = client.post(f"/v1/events/{event_id}/export/json", NO_MEDIA)
        if r.status_code != 202:
            raise RuntimeError(f"export request refused: {r.status_code} {r.text[:300]}")
        task_url = r.json()["task_url"]
        while True:
            r = client.get(task_url)
            polls += 1
            r.raise_for_status()
            task = r.json()
            # state is WAITING until the end; the phase (queued, started, progress) is in status
            phase = task["state"] if task["state"] != "WAITING" else f"WAITING/{task.get('status')}"
            if not states or states[-1] != phase:
                states.append(phase)
            if task["state"] == "SUCCESS":
                seconds = time.perf_counter() - started
                break
            if task["state"] == "FAILURE":
                raise RuntimeError(f"export failed: {task.get('result')}")
            if time.perf_counter() - started > EXPORT_TIMEOUT:
                raise RuntimeError(f"export still {task['state']} after {EXPORT_TIMEOUT:.0f} s")
            time.sleep(POLL_SECONDS)
    cpu = {name: round(tree_cpu(pid) - cpu_before[name], 3) for name, pid in pids.items()}
    result = task["result"]
    run = E2ERun(seconds, result["size"], result["sha256"], rss_before, max(sampler.peak, rss_before),
                 sampler.samples, polls, states, cpu)
    return run, result


def verify_download(result: dict[str, Any], floor: FloorRun, work: Path) -> None:
    """The stored archive is the one the task describes, and its records are exactly the floor's."""
    path = work / "download.zip"
    digest = hashlib.sha256()
    size = 0
    with requests.get(result["download_url"], stream=True, timeout=60) as r, path.open("wb") as out:
        r.raise_for_status()
        for chunk in r.iter_content(256 * 1024):
            size += len(chunk)
            digest.update(chunk)
            out.write(chunk)
    try:
        if size != result["size"] or digest.hexdigest() != result["sha256"]:
            raise AssertionError(f"download differs from the task result: {size} bytes, sha256 {digest.hexdigest()}"
                                 f" != {result['size']} bytes, sha256 {result['sha256']}")
        with zipfile.ZipFile(path) as archive:
            if archive.namelist() != list(legacy.FILES):
                raise AssertionError(f"unexpected members {archive.namelist()}")
            bad = archive.testzip()
            if bad is not None:
                raise AssertionError(f"corrupt member {bad}")
            files = json.loads(archive.read("meta"))["files"]
        if files != floor.files:
            raise AssertionError("archive files differ from the in-process floor's")
    finally:
        path.unlink(missing_ok=True)


@dataclass
class SizeResult:
    sessions: int
    event_id: int
    repeats: int
    archive_bytes: int
    json_bytes: int  # uncompressed size of the archive's JSON files, meta excluded
    e2e_seconds: float
    floor_seconds: float
    ratio: float
    exporter_rss_before: int
    exporter_rss_peak: int
    floor_runs: list[float] = field(default_factory=list)
    e2e_runs: list[dict[str, Any]] = field(default_factory=list)


def bench_size(n: int, event_id: int, repeats: int, factory, client: Client, stack: Stack, root_url: str,
               work: Path) -> SizeResult:
    floors: list[FloorRun] = []
    e2es: list[E2ERun] = []
    for i in range(repeats):
        floor = run_floor(factory, event_id, root_url)
        floors.append(floor)
        run, result = run_e2e(client, stack, event_id)
        verify_download(result, floor, work)
        run.verified = True
        e2es.append(run)
        json_mb = sum(f["size"] for f in floor.files.values()) / MB
        log(f"  {n:>6,} sessions, run {i + 1}/{repeats}: floor {floor.seconds:7.3f} s, e2e {run.seconds:7.3f} s, "
            f"{run.size / MB:.2f} MB ({json_mb:.1f} MB of JSON), exporter RSS {run.rss_before / MB:.0f} -> "
            f"{run.rss_peak / MB:.0f} MB, CPU s {run.cpu_seconds}")
    best_floor = min(f.seconds for f in floors)
    best_e2e = min(r.seconds for r in e2es)
    return SizeResult(
        sessions=n,
        event_id=event_id,
        repeats=repeats,
        archive_bytes=e2es[0].size,
        json_bytes=sum(f["size"] for f in floors[0].files.values()),
        e2e_seconds=best_e2e,
        floor_seconds=best_floor,
        ratio=best_e2e / best_floor,
        exporter_rss_before=e2es[0].rss_before,
        exporter_rss_peak=max(r.rss_peak for r in e2es),
        floor_runs=[f.seconds for f in floors],
        e2e_runs=[asdict(r) for r in e2es],
    )


# ---------------------------------------------------------------------------------------------------------- report


def table(results: list[SizeResult]) -> str:
    header = ("sessions", "archive MB", "e2e s", "floor s", "ratio e2e/floor", "exporter RSS before MB",
              "exporter peak RSS MB")
    rows = [
        (f"{r.sessions:,}", f"{r.archive_bytes / MB:.2f}", f"{r.e2e_seconds:.3f}", f"{r.floor_seconds:.3f}",
         f"{r.ratio:.2f}", f"{r.exporter_rss_before / MB:.1f}", f"{r.exporter_rss_peak / MB:.1f}")
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def verdict(results: list[SizeResult]) -> list[str]:
    notes = []
    largest = max(results, key=lambda r: r.sessions)
    ok = largest.ratio <= TARGET_RATIO
    notes.append(f"ratio at {largest.sessions:,} sessions: {largest.ratio:.2f} "
                 f"({'meets' if ok else 'misses'} the target <= {TARGET_RATIO})")
    if len(results) > 1:
        smallest = min(results, key=lambda r: r.sessions)
        growth = (largest.exporter_rss_peak - smallest.exporter_rss_peak) / MB
        notes.append(f"exporter peak RSS {smallest.exporter_rss_peak / MB:.1f} MB at {smallest.sessions:,} sessions, "
                     f"{largest.exporter_rss_peak / MB:.1f} MB at {largest.sessions:,} ({growth:+.1f} MB)")
    rises = ", ".join(f"{r.sessions:,}: {max(run['rss_peak'] - run['rss_before'] for run in r.e2e_runs) / MB:+.1f} MB"
                      for r in results)
    notes.append(f"largest rise of exporter RSS during one export (peak - RSS right before it): {rises}")
    return notes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tear_down(stack: Stack, vhost: str, engine, db: Database, work: Path, *, keep: bool) -> None:
    """Stop the services and remove what the run made (the vhost, a fresh PostgreSQL database, the work dir)."""
    stack.stop_all()
    delete_vhost(vhost)
    if engine is not None:
        engine.dispose()
    if db.drop is not None:
        db.drop()
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.export_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated session counts (default %(default)s)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL (a fresh database is created on it and dropped afterwards), "
                             "or a new SQLite file; default: a SQLite file in the temporary directory")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size, best taken (default %(default)s)")
    parser.add_argument("--repeats-large", type=int, default=2,
                        help=f"runs per size from {LARGE:,} sessions up (default %(default)s)")
    parser.add_argument("--json", type=Path, default=JSON_OUT, help="results file (default var/bench/export.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (service logs, database)")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes: comma-separated integers")
    if not args.sizes or min(args.sizes) < 1 or args.repeats < 1 or args.repeats_large < 1:
        parser.error("sizes and repeats must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="export_bench_"))
    var_dir = work / "var"
    var_dir.mkdir()
    db = fresh_database(var_dir, args.database_url)
    vhost = create_vhost()
    env = stack_env(var_dir, db.url, vhost)
    stack = Stack(env=env, log_dir=var_dir / "log")
    engine = None
    total = time.perf_counter()
    try:
        log(f"work dir {work}, database {db.kind}, vhost {vhost}")
        upgrade_to_head(db.url)
        engine = make_engine(db.url)
        factory = make_session_factory(engine)
        events = create_events(factory, args.sizes, create_user(factory))
        stack.start_all()
        stack.wait_healthy(timeout=90)
        log("stack healthy")
        client = Client(env["GATEWAY_URL"])
        root_url = env["GATEWAY_URL"] + "/"  # what the exporter writes in meta: archives then match byte for byte
        results = []
        for n in args.sizes:
            repeats = args.repeats_large if n >= LARGE else args.repeats
            results.append(bench_size(n, events[n], repeats, factory, client, stack, root_url, work))
    except BaseException:
        for name in stack.processes:
            log(f"--- {name} log tail ---{stack._log_tail(name)}")
        raise
    finally:
        tear_down(stack, vhost, engine, db, work, keep=args.keep)

    repeats_note = ", ".join(f"{r.sessions:,}: best of {r.repeats}" for r in results)
    print(table(results))
    print(f"(times: POST to first SUCCESS seen, polled every {POLL_SECONDS * 1000:.0f} ms, vs generate_archive "
          f"in-process into a counting sha256 sink; {repeats_note}; RSS: exporter process tree sampled every "
          f"{SAMPLE_SECONDS * 1000:.0f} ms, peak over all runs of the size)")
    for note in verdict(results):
        print(note)

    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": db.kind,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "poll_seconds": POLL_SECONDS,
        "sample_seconds": SAMPLE_SECONDS,
        "target_ratio": TARGET_RATIO,
        "total_seconds": round(time.perf_counter() - total, 1),
        "results": [asdict(r) for r in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
