"""Schedule format export benchmark: every export format on one synthetic event, beside a floor, in one run.

    python -m bench.formats_bench [--sessions 5000] [--repeats 3] [--database-url URL]

A fresh database (SQLite in a temporary directory by default; with ``--database-url postgresql+psycopg2://...`` a
new database is created on that server and dropped at the end) holds one synthetic event (``tools/synthetic.py``).
Per repeat, alternating:

* floor: the records every schedule writer reads (``event_record`` and ``iter_records`` of sessions, speakers,
  microlocations and tracks), consumed without writing anything: the database and record-building cost no format
  can avoid;
* each registered format: its ``write`` in this process, chunks consumed by a sink that counts bytes and updates a
  sha256 (what the exporter does before upload).

The best (smallest) wall time of each is reported with the output size and the ratio to the floor; every format's
bytes are the same on every repeat (checked). In process on purpose: the queue, task and storage around an export
are the same for every format and measured by ``bench/export_bench.py``.

Results: a table on stdout and ``var/bench/formats.json``.
"""

import argparse
import hashlib
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import fresh_database, synthetic_database
from shared.archive.formats import FORMATS
from shared.archive.records import event_record, iter_records
from shared.archive.writer import ExportReport
from tools.stack import REPO

EXPORTED_AT = datetime(2026, 12, 1, tzinfo=UTC)
FLOOR_FILES = ("sessions", "speakers", "microlocations", "tracks")


def floor(db, event_id: int) -> int:
    count = 0
    with db() as session:
        event_record(session, event_id)
        for file in FLOOR_FILES:
            for _ in iter_records(session, event_id, file):
                count += 1
    return count


def run_format(db, event_id: int, identifier: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    chunks = FORMATS[identifier].write(db, event_id, {}, fetcher=None, root_url="http://127.0.0.1:8000/",
                                       exported_at=EXPORTED_AT, report=ExportReport(), on_progress=lambda *_: None)
    for chunk in chunks:
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        database = fresh_database(Path(tmp), args.database_url)
        url = database.url
        try:
            engine, db, event_id = synthetic_database(url, args.sessions)
            best: dict[str, float] = {}
            sizes: dict[str, int] = {}
            digests: dict[str, str] = {}
            for _ in range(args.repeats):
                seconds, _count = timed(floor, db, event_id)
                best["floor"] = min(best.get("floor", seconds), seconds)
                for identifier in FORMATS:
                    seconds, (size, sha) = timed(run_format, db, event_id, identifier)
                    best[identifier] = min(best.get(identifier, seconds), seconds)
                    if identifier in digests:
                        assert digests[identifier] == sha, f"{identifier}: bytes differ between repeats"
                    sizes[identifier], digests[identifier] = size, sha
            engine.dispose()
        finally:
            if database.drop is not None:
                database.drop()

    rows = [("floor (records read)", best["floor"], None)] + [(i, best[i], sizes[i]) for i in FORMATS]
    print(f"{args.sessions} sessions, best of {args.repeats}, {url.split(':', 1)[0]}, Python "
          f"{platform.python_version()}")
    print(f"{'format':<22}{'seconds':>9}{'x floor':>9}{'MB':>9}{'sessions/s':>12}")
    for name, seconds, size in rows:
        mb = f"{size / 1e6:.2f}" if size is not None else "-"
        print(f"{name:<22}{seconds:>9.3f}{seconds / best['floor']:>9.2f}{mb:>9}{args.sessions / seconds:>12.0f}")
    out = REPO / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "formats.json").write_text(json.dumps({
        "sessions": args.sessions, "repeats": args.repeats, "database": url.split(":", 1)[0],
        "best_seconds": best, "bytes": sizes, "sha256": digests}, indent=2))


if __name__ == "__main__":
    main()
