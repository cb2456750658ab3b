"""What the benchmarks share: process-tree RSS/CPU sampling, a throwaway stack (database, vhost, services), the
logged-in gateway client, export-task polling, argument and result helpers, and plain-text tables.

Imported by the ``bench`` entry modules (the package has run ``eventlet.monkey_patch()`` by then).
"""

import argparse
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eventlet
import psutil
import requests
import sqlalchemy as sa

from shared.contracts import MEDIA_FLAGS
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models import events as m
from shared.passwords import hash_password
from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost
from tools.stack import Stack
from tools.synthetic import create_synthetic_event

POLL_SECONDS = 0.02
SAMPLE_SECONDS = 0.02
EXPORT_TIMEOUT = 900.0
EMAIL = "bench-organizer@example.org"
PASSWORD = "bench password"
NO_MEDIA = dict.fromkeys(MEDIA_FLAGS, False)
MB = 1024 * 1024

# The sampler must run on a real OS thread with a real sleep: a green one would only run when this process's hub
# gets a turn, not every 20 ms.
_os_threading = eventlet.patcher.original("threading")
_os_time = eventlet.patcher.original("time")


# ------------------------------------------------------------------------------------------------------ measuring


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process, plus the pages of its descendants that they do not share (a forked child's
    copied-on-write pages: the importer builds its rows in one). For a process without children, its RSS."""
    tree = _tree(pid)
    total = 0
    try:
        total = tree[0].memory_info().rss
    except psutil.NoSuchProcess:
        pass
    for proc in tree[1:]:
        total += _private_bytes(proc)
    return total


def _private_bytes(proc: psutil.Process) -> int:
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("Private_Clean:",
                                                                                      "Private_Dirty:")))
    except (OSError, ValueError, IndexError):
        try:
            return proc.memory_info().rss  # no smaps_rollup: all of it, an overcount
        except psutil.NoSuchProcess:
            return 0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants, reaped ones included."""
    total = 0.0
    for proc in _tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
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

    def __init__(self, base_url: str, email: str = EMAIL) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.trust_env = False
        r = self.http.post(base_url + "/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.base_url + path, json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30)



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




# ------------------------------------------------------------------------------------------------------ the stack


@dataclass
class BenchStack:
    """One throwaway set-up: work dir, fresh database (migrated), vhost, and the services (not started yet)."""

    work: Path
    db: Database
    vhost: str
    env: dict[str, str]
    stack: Stack
    engine: Any = None
    factory: Any = None

    def start(self) -> Client:
        """Start the services, wait until they answer, and log in as the user ``create_user`` made."""
        self.stack.start_all()
        self.stack.wait_healthy(timeout=90)
        log("stack healthy")
        return Client(self.env["GATEWAY_URL"])


@contextmanager
def bench_stack(prefix: str, database_url: str | None, *, keep: bool,
                extra_env: dict[str, str] | None = None) -> Iterator[BenchStack]:
    """A :class:`BenchStack`; on failure the services' log tails are printed, and it is always torn down."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    var_dir = work / "var"
    var_dir.mkdir()
    db = fresh_database(var_dir, database_url)
    vhost = create_vhost()
    env = {**stack_env(var_dir, db.url, vhost), **(extra_env or {})}
    bench = BenchStack(work, db, vhost, env, Stack(env=env, log_dir=var_dir / "log"))
    try:
        log(f"work dir {work}, database {db.kind}, vhost {vhost}")
        upgrade_to_head(db.url)
        bench.engine = make_engine(db.url)
        bench.factory = make_session_factory(bench.engine)
        yield bench
    except BaseException:
        for name in bench.stack.processes:
            log(f"--- {name} log tail ---{bench.stack.log_tail(name)}")
        raise
    finally:
        tear_down(bench.stack, vhost, bench.engine, db, work, keep=keep)


def synthetic_database(url: str, sessions: int) -> tuple[Any, Any, int]:
    """Migrate the database at ``url`` and create one synthetic event: (engine, session factory, event id)."""
    upgrade_to_head(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session:
        event_id = create_synthetic_event(session, sessions=sessions)
        session.commit()
    return engine, factory, event_id


# ---------------------------------------------------------------------------------------------------------- tasks


def request_export(client: Client, event_id: int, body: dict[str, Any]) -> str:
    """POST a JSON export of the event; the task URL (a gateway path)."""
    r = client.post(f"/v1/events/{event_id}/export/json", body)
    if r.status_code != 202:
        raise RuntimeError(f"export request refused: {r.status_code} {r.text[:300]}")
    return r.json()["task_url"]


def wait_for_task(fetch: Callable[[], dict[str, Any]], started: float, *, timeout: float = EXPORT_TIMEOUT,
                  poll_seconds: float = POLL_SECONDS) -> tuple[dict[str, Any], float]:
    """Poll ``fetch`` (one GET of the task) until SUCCESS: the task and the seconds since ``started``."""
    while True:
        task = fetch()
        if task["state"] == "SUCCESS":
            return task, time.perf_counter() - started
        if task["state"] == "FAILURE":
            raise RuntimeError(f"export failed: {task.get('result')}")
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"export still {task['state']} after {timeout:.0f} s")
        time.sleep(poll_seconds)


# ------------------------------------------------------------------------------------------- arguments and output


def parse_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """``--sizes``: comma-separated integers, sorted and without repeats."""
    try:
        return sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes: comma-separated integers")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: bool = False) -> str:
    """A plain-text table, columns right-aligned (or left-aligned)."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) if left else c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), "-|-".join("-" * w for w in widths), *(line(row) for row in rows)])


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_results(path: Path, out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results written to {path}")
