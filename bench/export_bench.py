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

import argparse
import hashlib
import json
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    MB,
    NO_MEDIA,
    POLL_SECONDS,
    SAMPLE_SECONDS,
    Client,
    RssSampler,
    bench_stack,
    create_events,
    create_user,
    log,
    machine,
    parse_sizes,
    render_table,
    request_export,
    tree_cpu,
    tree_rss,
    wait_for_task,
    write_results,
)
from shared.archive import legacy
from shared.archive.writer import ExportReport, generate_archive
from shared.media_fetcher import MediaFetcher
from tools.stack import REPO, Stack

DEFAULT_SIZES = (500, 5000, 50000)
LARGE = 20000  # sizes from here on use --repeats-large
JSON_OUT = REPO / "var" / "bench" / "export.json"
TARGET_RATIO = 1.5


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
        task_url = request_export(client, event_id, NO_MEDIA)

        def fetch() -> dict[str, Any]:
            nonlocal polls
            r = client.get(task_url)
            polls += 1
            r.raise_for_status()
            task = r.json()
            # state is WAITING until the end; the phase (queued, started, progress) is in status
            phase = task["state"] if task["state"] != "WAITING" else f"WAITING/{task.get('status')}"
            if not states or states[-1] != phase:
                states.append(phase)
            return task

        task, seconds = wait_for_task(fetch, started)
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
    return render_table(header, rows)


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
    args.sizes = parse_sizes(parser, args.sizes)
    if not args.sizes or min(args.sizes) < 1 or args.repeats < 1 or args.repeats_large < 1:
        parser.error("sizes and repeats must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    total = time.perf_counter()
    with bench_stack("export_bench_", args.database_url, keep=args.keep) as bench:
        factory = bench.factory
        events = create_events(factory, args.sizes, create_user(factory))
        client = bench.start()
        root_url = bench.env["GATEWAY_URL"] + "/"  # what the exporter writes in meta: archives match byte for byte
        results = []
        for n in args.sizes:
            repeats = args.repeats_large if n >= LARGE else args.repeats
            results.append(bench_size(n, events[n], repeats, factory, client, bench.stack, root_url, bench.work))
    db = bench.db

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
        "machine": machine(),
        "poll_seconds": POLL_SECONDS,
        "sample_seconds": SAMPLE_SECONDS,
        "target_ratio": TARGET_RATIO,
        "total_seconds": round(time.perf_counter() - total, 1),
        "results": [asdict(r) for r in results],
    }
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
