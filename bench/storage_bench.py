"""Storage benchmark: a 1 GB export uploaded to the S3 backend (SeaweedFS), through the real services.

    python -m bench.storage_bench [--media-mb 100] [--backends s3,local] [--keep]

An event with 10 media items (5 speaker photos, 5 sponsor logos) of ``--media-mb`` MB each, served by a local HTTP
server (``bench/media_server.py``: random, incompressible bytes, so the archive is as large as its media) that
``MEDIA_ALLOW_HOSTS`` allow-lists; ``MEDIA_MAX_BYTES`` is raised to fit. SeaweedFS runs on 127.0.0.1 (real SigV4),
an admin registers it as a backend record through the admin API, and the organizer exports the event with
``{"image": true, "storage": "<record>"}``: the exporter fetches the media, deflates the zip as a stream and PUTs it
to the storage data plane, which streams it to S3 as a multipart upload.

Measured per backend (``s3``: the record; ``local``: the default backend, for reference): the time from the POST to
the first SUCCESS seen (polled every 50 ms) and the archive bytes per second over it; the peak RSS of the storage and
the exporter process trees (each sampled every 20 ms by an OS thread), which must stay under 200 MB. Afterwards the
archive is downloaded through the link the task returns (for S3: presigned, straight from SeaweedFS) and its size and
sha256 checked against the task result, and a Range request is checked against the same bytes.

Disk: about 3 x the archive size while it runs (SeaweedFS keeps the multipart staging object until the server-side
copy is done; the local reference run keeps one more copy); everything is deleted at the end unless ``--keep``.
Results: a table on stdout and ``var/bench/storage.json``. Exit status 1 if a peak RSS reaches the limit.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import common
from bench.common import MB, PASSWORD, Client, RssSampler, free_port, log
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models import events as m
from shared.passwords import hash_password
from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost
from tests.support.storage_servers import start_seaweedfs
from tools.stack import REPO, Stack
from tools.synthetic import create_synthetic_event

RSS_LIMIT = 200 * MB
MEDIA_ITEMS = 10  # create_synthetic_event(sessions=10): 5 speakers with photos, 5 sponsors with logos
POLL_SECONDS = 0.05
EXPORT_TIMEOUT = 1800.0
BUCKET = "bench-exports"
JSON_OUT = REPO / "var" / "bench" / "storage.json"


@dataclass
class Run:
    backend: str
    archive_bytes: int
    seconds: float
    storage_rss_before: int
    storage_rss_peak: int
    exporter_rss_before: int
    exporter_rss_peak: int
    cpu_seconds: dict[str, float]
    download_host: str
    download_seconds: float
    verified: bool

    @property
    def mb_per_s(self) -> float:
        return self.archive_bytes / MB / self.seconds


def disk_report(path: Path) -> int:
    usage = shutil.disk_usage(path)
    log(f"disk at {path}: {usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB")
    return usage.free


def start_media_server(work: Path, size: int) -> tuple[subprocess.Popen, int]:
    port_file = work / "media.port"
    proc = subprocess.Popen([sys.executable, "-m", "bench.media_server", "--port-file", str(port_file),
                             "--size", str(size)], cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("media server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def export_once(api: Client, stack: Stack, event_id: int, storage: str | None) -> tuple[Run, dict[str, Any]]:
    pids = {name: proc.pid for name, proc in stack.processes.items()}
    cpu_before = {name: common.tree_cpu(pid) for name, pid in pids.items()}
    before = {name: common.tree_rss(pids[name]) for name in ("storage", "exporter")}
    body: dict[str, Any] = {"image": True, **({"storage": storage} if storage else {})}
    with RssSampler(pids["storage"]) as storage_rss, RssSampler(pids["exporter"]) as exporter_rss:
        started = time.perf_counter()
        task_url = common.request_export(api, event_id, body)
        task, seconds = common.wait_for_task(lambda: api.get(task_url).json(), started, timeout=EXPORT_TIMEOUT,
                                      poll_seconds=POLL_SECONDS)
    result = task["result"]
    if result.get("warnings_total"):
        raise RuntimeError(f"media were not all fetched: {result['warnings'][:3]}")
    cpu = {name: round(common.tree_cpu(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    download_seconds = verify_download(result)
    run = Run(storage or "default", result["size"], seconds, before["storage"],
              max(storage_rss.peak, before["storage"]), before["exporter"], max(exporter_rss.peak, before["exporter"]),
              cpu, result["download_url"].split("/")[2], download_seconds, True)
    return run, result


def verify_download(result: dict[str, Any]) -> float:
    """Stream the archive through the task's link: size and sha256 as the task says; a Range of the same bytes."""
    http = requests.Session()
    http.trust_env = False
    digest = hashlib.sha256()
    size = 0
    middle = result["size"] // 2
    window = b""
    started = time.perf_counter()
    with http.get(result["download_url"], stream=True, timeout=120) as r:
        r.raise_for_status()
        for chunk in r.iter_content(MB):
            if size <= middle < size + len(chunk):
                window = chunk[middle - size:middle - size + 1000]
            size += len(chunk)
            digest.update(chunk)
    seconds = time.perf_counter() - started
    if size != result["size"] or digest.hexdigest() != result["sha256"]:
        raise AssertionError(f"download differs from the task result: {size} bytes, {digest.hexdigest()}")
    part = http.get(result["download_url"], headers={"Range": f"bytes={middle}-{middle + len(window) - 1}"},
                    timeout=60)
    if part.status_code != 206 or part.content != window:
        raise AssertionError(f"Range request: HTTP {part.status_code}, {len(part.content)} bytes")
    return seconds


def table(runs: list[Run]) -> str:
    header = ("backend", "archive MB", "export s", "MB/s", "storage RSS MB (before -> peak)",
              "exporter RSS MB (before -> peak)", "download link", "download MB/s", "verified")
    rows = [(r.backend, f"{r.archive_bytes / MB:,.1f}", f"{r.seconds:.1f}", f"{r.mb_per_s:.1f}",
             f"{r.storage_rss_before / MB:.0f} -> {r.storage_rss_peak / MB:.0f}",
             f"{r.exporter_rss_before / MB:.0f} -> {r.exporter_rss_peak / MB:.0f}", r.download_host,
             f"{r.archive_bytes / MB / r.download_seconds:.0f}", "sha256+Range" if r.verified else "no")
            for r in runs]
    return common.render_table(header, rows, left=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--media-mb", type=int, default=100, help="MB per media item, 10 items (default %(default)s)")
    parser.add_argument("--backends", default="s3,local", help="s3 and/or local, in order (default %(default)s)")
    parser.add_argument("--json", type=Path, default=JSON_OUT, help="results file (default var/bench/storage.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, SeaweedFS data)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or set(args.backends) - {"s3", "local"} or args.media_mb < 1:
        parser.error("--backends: s3 and/or local; --media-mb: positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    media_size = args.media_mb * 1000 * 1000
    work = Path(tempfile.mkdtemp(prefix="storage_bench_"))
    needed = 3 * MEDIA_ITEMS * media_size + 2 * 1024**3
    if disk_report(work) < needed:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"not enough disk space: need about {needed / 1024**3:.1f} GiB")
    var_dir = work / "var"
    var_dir.mkdir()
    vhost = create_vhost()
    media, media_port = start_media_server(work, media_size)
    seaweed = None
    stack = None
    runs: list[Run] = []
    try:
        if "s3" in args.backends:
            seaweed = start_seaweedfs(work / "seaweedfs", bucket=BUCKET)
            log(f"SeaweedFS S3 at {seaweed.endpoint}")
        database_url = f"sqlite:///{var_dir / 'platform.db'}"
        upgrade_to_head(database_url)
        engine = make_engine(database_url)
        with make_session_factory(engine)() as session:
            admin = m.User(email="bench-admin@example.org", password_hash=hash_password(PASSWORD), is_admin=True)
            organizer = m.User(email="bench-orga@example.org", password_hash=hash_password(PASSWORD))
            session.add_all([admin, organizer])
            session.flush()
            event_id = create_synthetic_event(session, sessions=MEDIA_ITEMS, owner_user_id=organizer.id,
                                              media_base_url=f"http://127.0.0.1:{media_port}/media")
            session.commit()
        engine.dispose()
        env = {
            "VAR_DIR": str(var_dir), "DATABASE_URL": database_url, "AMQP_URI": amqp_uri(vhost),
            "GATEWAY_URL": f"http://127.0.0.1:{free_port()}", "STORAGE_URL": f"http://127.0.0.1:{free_port()}",
            "STORAGE_DIR": str(var_dir / "storage"), "SECRET_KEY": f"bench-{uuid.uuid4().hex}",
            "MEDIA_ALLOW_HOSTS": f"127.0.0.1:{media_port}", "MEDIA_MAX_BYTES": str(media_size + MB),
            "MEDIA_TIMEOUT": "60", "LOG_LEVEL": "WARNING",
        }
        stack = Stack(env=env, log_dir=var_dir / "log")
        stack.start_all()
        stack.wait_healthy(timeout=90)
        admin_api = Client(env["GATEWAY_URL"], "bench-admin@example.org")
        organizer_api = Client(env["GATEWAY_URL"], "bench-orga@example.org")
        for backend in args.backends:
            storage = None
            if backend == "s3":
                storage = "bench-s3"
                r = admin_api.post("/v1/admin/storage-backends", {
                    "storage_backend": "s3", "storage_backend_id": storage, "token": seaweed.secret_key,
                    "config": {"bucket": BUCKET, "endpoint_url": seaweed.endpoint,
                               "access_key_id": seaweed.access_key}})
                if r.status_code != 201:
                    raise RuntimeError(f"backend record refused: {r.text}")
            log(f"exporting {MEDIA_ITEMS} x {args.media_mb} MB of media to {backend} ...")
            run, result = export_once(organizer_api, stack, event_id, storage)
            runs.append(run)
            log(f"  {run.archive_bytes / MB:,.1f} MB in {run.seconds:.1f} s ({run.mb_per_s:.1f} MB/s); storage RSS "
                f"peak {run.storage_rss_peak / MB:.0f} MB, exporter {run.exporter_rss_peak / MB:.0f} MB; "
                f"CPU s {run.cpu_seconds}")
            r = organizer_api.http.delete(f"{organizer_api.base_url}/v1/events/{event_id}/exports/"
                                          f"{result['key'].split('/')[2]}", timeout=60)  # frees the disk
            if r.status_code != 204:
                raise RuntimeError(f"deleting the export failed: {r.status_code} {r.text[:200]}")
    except BaseException:
        if stack is not None:
            for name in stack.processes:
                log(f"--- {name} log tail ---{stack.log_tail(name)}")
        raise
    finally:
        if stack is not None:
            stack.stop_all()
        if seaweed is not None:
            seaweed.stop()
        os.killpg(media.pid, 15)
        media.wait(10)
        delete_vhost(vhost)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(table(runs))
    print(f"(export s: POST to first SUCCESS seen, polled every {POLL_SECONDS * 1000:.0f} ms, media fetched from a "
          f"local server and stored uncompressed; MB/s: archive bytes over that time; RSS: process tree, sampled "
          f"every 20 ms; limit {RSS_LIMIT / MB:.0f} MB; MB = MiB)")
    over = [f"{r.backend}: {name} {peak / MB:.0f} MB" for r in runs
            for name, peak in (("storage", r.storage_rss_peak), ("exporter", r.exporter_rss_peak)) if peak >= RSS_LIMIT]
    print("peak RSS within the limit" if not over else f"peak RSS over the limit: {', '.join(over)}")
    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "media": {"items": MEDIA_ITEMS, "bytes_each": media_size},
        "rss_limit": RSS_LIMIT,
        "runs": [{**asdict(r), "mb_per_s": round(r.mb_per_s, 2)} for r in runs],
    }
    common.write_results(args.json, out)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
