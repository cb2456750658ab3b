"""The speed table: import and export of realistic events end to end, each beside its independent floor.

    python -m bench.table [--quick] [--sizes 493,5000,50000] [--databases sqlite,postgresql] [--repeats 3]

Per database (SQLite file, or a fresh database on the PostgreSQL server of ``--postgres-url``) one throwaway
RabbitMQ vhost and the five services as ``nameko run`` processes (``tools/stack.py``). Per size, an event made by
``bench/realistic.py`` (FOSSASIA16 cycled to N sessions, no media) is

* imported: the zip uploaded as a chunked multipart body, POST to the first SUCCESS seen (``bench/import_bench.py``)
  and its counts checked, against the import floor (parse + one sqlite3 transaction, in this process);
* exported: the imported event, POST to the first SUCCESS seen (``measure_export``) and the download checked,
  against the export floor (``json.dumps(indent=4)`` + deflate level 6 of the same files, in this process).

Best of ``--repeats`` (``--repeats-large``, default one, from 20,000 sessions up) for each figure; floors likewise.
Peak RSS is the service under test's (importer, exporter), plus the private pages of a child it forked (the
importer builds rows in one; ``bench.common.tree_rss``), sampled every 20 ms. The machine is shared:
the 1-minute load average is printed beside each size, and ratios are what compare across runs.

With ``--profile``, one more import of the largest size (not measured) runs with py-spy sampling the importer
(``bench/pyspy.py``); its top functions are printed after the table, its raw samples kept in ``var/bench``.

Results: the table on stdout and ``var/bench/table.json``.
"""

import argparse
import json
import os
import platform
import sys
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench import pyspy, realistic
from bench.common import MB, Client, bench_stack, create_user, log, machine, parse_sizes, write_results
from bench.export_bench import E2ERun, run_e2e
from bench.import_bench import Run, run_import, verify
from tools.stack import REPO, Stack

DEFAULT_SIZES = (493, 5000, 50000)
QUICK_SIZES = (493, 5000)
LARGE = 20000  # one run per figure from here on
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
JSON_OUT = REPO / "var" / "bench" / "table.json"
IMPORT_TARGET = 2.0
EXPORT_TARGET = 1.3


@dataclass
class Row:
    database: str
    sessions: int
    zip_bytes: int
    json_bytes: int
    load_before: float
    import_seconds: float
    import_floor: float
    import_cpu: float  # the importer's CPU seconds in its fastest run: what load on the machine inflates least
    importer_rss_peak: int
    export_seconds: float
    export_floor: float
    exporter_rss_peak: int
    import_runs: list[dict[str, Any]]
    export_runs: list[dict[str, Any]]

    @property
    def import_ratio(self) -> float:
        return self.import_seconds / self.import_floor

    @property
    def export_ratio(self) -> float:
        return self.export_seconds / self.export_floor


# ----------------------------------------------------------------------------------------------------- measuring


def measure_export(client: Client, stack: Stack, event_id: int, expected: dict[str, int],
                   work: Path) -> E2ERun:
    """One export of ``event_id`` end to end (POST to SUCCESS), then its download checked outside the timing."""
    run, result = run_e2e(client, stack, event_id)
    path = work / "download.zip"
    try:
        with requests.get(result["download_url"], stream=True, timeout=120) as r, path.open("wb") as out:
            r.raise_for_status()
            for chunk in r.iter_content(256 * 1024):
                out.write(chunk)
        if path.stat().st_size != result["size"]:
            raise AssertionError(f"download holds {path.stat().st_size} bytes, the task said {result['size']}")
        with zipfile.ZipFile(path) as archive:
            counts = {name: len(json.loads(archive.read(name))) for name in expected}
        if counts != expected:
            raise AssertionError(f"exported counts {counts} != imported {expected}")
    finally:
        path.unlink(missing_ok=True)
    run.verified = True
    return run


def profile_import(db_kind: str, n: int, path: Path, client: Client, stack: Stack) -> str:
    """One more import of ``path`` with py-spy on the importer; the summary of where its job spent the time."""
    out = JSON_OUT.parent / f"importer-{db_kind}-{n}.pyspy.txt"
    with pyspy.Recording(stack.processes["importer"].pid, out):
        run = run_import(client, stack, path)
    return (f"importer profile, {db_kind}, {n:,} sessions (import {run.seconds:.2f} s under py-spy; raw samples in "
            f"{out}):\n{pyspy.summary(out, 'run_import')}")


def measure_size(db_kind: str, n: int, repeats: int, client: Client, stack: Stack, work: Path,
                 profiles: list[str] | None = None) -> Row:
    archive = realistic.make_archive(n, work / f"realistic{n}.zip")
    expected = {name: archive.counts[name] for name in ("sessions", "speakers", "tracks", "microlocations")}
    files = realistic.read_files(archive.path)
    load = os.getloadavg()[0]
    log(f"{db_kind} {n:,} sessions: {archive.zip_bytes / MB:.2f} MB zip "
        f"({archive.json_bytes / archive.zip_bytes:.1f}:1), load {load:.2f}")
    imports: list[Run] = []
    exports: list[E2ERun] = []
    import_floors: list[float] = []
    export_floors: list[float] = []
    for i in range(repeats):
        floor_db = work / f"floor{n}_{i}.db"
        import_floors.append(realistic.import_floor(archive.path, floor_db))
        floor_db.unlink()
        run = run_import(client, stack, archive.path)
        verify(client, run, expected)
        imports.append(run)
        export_floors.append(realistic.export_floor(files)[0])
        exports.append(measure_export(client, stack, run.event_id, expected, work))
        log(f"  run {i + 1}/{repeats}: import {run.seconds:.3f} s (floor {import_floors[-1]:.3f}), importer RSS "
            f"{run.importer_rss_before / MB:.0f} -> {run.importer_rss_peak / MB:.0f} MB; export "
            f"{exports[-1].seconds:.3f} s (floor {export_floors[-1]:.3f}), exporter RSS "
            f"{exports[-1].rss_before / MB:.0f} -> {exports[-1].rss_peak / MB:.0f} MB; load {os.getloadavg()[0]:.2f}")
    if profiles is not None:
        profiles.append(profile_import(db_kind, n, archive.path, client, stack))
    archive.path.unlink()
    return Row(db_kind, n, archive.zip_bytes, archive.json_bytes, load,
               min(r.seconds for r in imports), min(import_floors),
               min(imports, key=lambda r: r.seconds).cpu_seconds["importer"], max(r.importer_rss_peak for r in imports),
               min(r.seconds for r in exports), min(export_floors), max(r.rss_peak for r in exports),
               [asdict(r) for r in imports], [asdict(r) for r in exports])


def run_database(kind: str, sizes: list[int], repeats: tuple[int, int], postgres_url: str, keep: bool,
                 profiles: list[str] | None) -> list[Row]:
    rows: list[Row] = []
    with bench_stack("bench_table_", postgres_url if kind == "postgresql" else None, keep=keep) as bench:
        create_user(bench.factory)
        client = bench.start()
        for n in sizes:
            rows.append(measure_size(bench.db.kind, n, repeats[n >= LARGE], client, bench.stack, bench.work,
                                     profiles if n == sizes[-1] else None))
    return rows


# ---------------------------------------------------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    header = ("database", "sessions", "zip MB", "import e2e s", "floor s", "ratio", "importer CPU s", "export e2e s",
              "floor s", "ratio", "importer peak MB", "exporter peak MB", "load")
    cells = [(r.database, f"{r.sessions:,}", f"{r.zip_bytes / MB:.1f}", f"{r.import_seconds:.2f}",
              f"{r.import_floor:.2f}", f"{r.import_ratio:.1f}", f"{r.import_cpu:.2f}", f"{r.export_seconds:.2f}",
              f"{r.export_floor:.2f}",
              f"{r.export_ratio:.1f}", f"{r.importer_rss_peak / MB:.0f}", f"{r.exporter_rss_peak / MB:.0f}",
              f"{r.load_before:.2f}") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(cell, widths, strict=True)) + " |" for cell in cells]
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    notes = []
    for kind in dict.fromkeys(r.database for r in rows):
        mine = [r for r in rows if r.database == kind]
        for r in mine:
            if r.sessions >= 5000:
                notes.append(f"{kind} {r.sessions:,}: import ratio {r.import_ratio:.2f} "
                             f"({'meets' if r.import_ratio <= IMPORT_TARGET else 'misses'} <= {IMPORT_TARGET}), "
                             f"export ratio {r.export_ratio:.2f} "
                             f"({'meets' if r.export_ratio <= EXPORT_TARGET else 'misses'} <= {EXPORT_TARGET})")
        small, large = min(mine, key=lambda r: r.sessions), max(mine, key=lambda r: r.sessions)
        if large is not small:
            notes.append(f"{kind} peak RSS growth {small.sessions:,} -> {large.sessions:,} sessions: importer "
                         f"{(large.importer_rss_peak - small.importer_rss_peak) / MB:+.0f} MB, exporter "
                         f"{(large.exporter_rss_peak - small.exporter_rss_peak) / MB:+.0f} MB (target < 50)")
    sqlite = {r.sessions: r for r in rows if r.database == "sqlite"}
    for r in rows:
        if r.database != "sqlite" and r.sessions in sqlite:
            base = sqlite[r.sessions]
            notes.append(f"{r.database}/sqlite at {r.sessions:,}: import {r.import_seconds / base.import_seconds:.2f}"
                         f"x, export {r.export_seconds / base.export_seconds:.2f}x (target <= 1.5)")
    return notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {','.join(map(str, QUICK_SIZES))} only")
    parser.add_argument("--sizes", default=None, help="comma-separated session counts (default "
                        f"{','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--databases", default="sqlite,postgresql", help="sqlite, postgresql or both "
                        "(default %(default)s)")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", POSTGRES_URL),
                        help="server on which a fresh database is created and dropped (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help=f"runs below {LARGE:,} sessions, best taken "
                        "(default %(default)s)")
    parser.add_argument("--repeats-large", type=int, default=1, help=f"runs from {LARGE:,} sessions up, best taken "
                        "(default %(default)s)")
    parser.add_argument("--json", type=Path, default=JSON_OUT, help="results file (default var/bench/table.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, databases)")
    parser.add_argument("--profile", action="store_true", help="py-spy on one more import of the largest size")
    args = parser.parse_args(argv)
    sizes = args.sizes or ",".join(map(str, QUICK_SIZES if args.quick else DEFAULT_SIZES))
    args.sizes = parse_sizes(parser, sizes)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.repeats < 1 or args.repeats_large < 1:
        parser.error("sizes and repeats must be positive")
    if not args.databases or set(args.databases) - {"sqlite", "postgresql"}:
        parser.error("--databases: sqlite and/or postgresql")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile and pyspy.executable() is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy, or set PY_SPY)")
    rows: list[Row] = []
    profiles: list[str] | None = [] if args.profile else None
    for kind in args.databases:
        rows += run_database(kind, args.sizes, (args.repeats, args.repeats_large), args.postgres_url, args.keep,
                             profiles)
    print(table(rows))
    print("(e2e: POST to the first SUCCESS seen, polled every 20 ms; floors in this process, see bench/realistic.py; "
          f"best of {args.repeats} below {LARGE:,} sessions, else of {args.repeats_large}; peak RSS: the service's "
          "process tree; "
          "importer CPU: user + system of its process tree in the fastest import; load: 1-minute load average "
          f"before the size; {platform.python_version()}, {os.cpu_count()} CPUs)")
    for note in verdicts(rows):
        print(note)
    for text in profiles or ():
        print(text)
    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": [asdict(r) | {"import_ratio": r.import_ratio, "export_ratio": r.export_ratio} for r in rows],
    }
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
