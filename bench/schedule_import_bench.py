"""Schedule import benchmark: every format's file of one synthetic event read, validated and loaded, in-process.

    python -m bench.schedule_import_bench [--sessions 5000] [--repeats 3]

One temporary SQLite database holds a synthetic event (``tools/synthetic.py``); it is exported once in every format
by the registered writers (``shared/archive/formats.py``). Then, per format, ``repeats`` times, alternating:

* floor: the Open Event zip of the same event through the archive reader (``open_archive``, ``validate_archive``)
  and the loader (``load_archive``) into the database, one transaction: what every import does after transcoding;
* format: the schedule file detected, read (``shared/schedule/readers``), written as a legacy archive folder, then
  the same reader and loader: what the importer does for that format.

Best (smallest) time of each; the services, RabbitMQ and storage are not involved (the end-to-end import path is
measured by ``bench/import_bench.py`` for the zip; the transcoding step is the only thing a format adds to it).
Results: a table on stdout and ``var/bench/schedule_import.json``.
"""

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import synthetic_database
from shared.archive.formats import FORMATS
from shared.archive.loader import load_archive
from shared.archive.reader import ArchiveLimits, open_archive, validate_archive
from shared.archive.writer import ExportReport
from shared.media_fetcher import MediaFetcher
from shared.schedule.readers import ScheduleLimits, detect_format, read_csv_zip, read_schedule
from shared.schedule.readers.archive_out import write_folder

FORMAT_IDS = ("frab-xml", "schedule-json", "ical", "xcal", "pentabarf", "csv")


def _export(factory, event_id: int, fmt: str) -> bytes:
    return b"".join(FORMATS[fmt].write(factory, event_id, {}, fetcher=MediaFetcher(), root_url="https://bench/",
                                       exported_at=datetime.now(UTC), report=ExportReport(),
                                       on_progress=lambda *a: None))


def _load(factory, archive_path: Path) -> dict[str, int]:
    with open_archive(archive_path, ArchiveLimits()) as archive:
        counts = validate_archive(archive)
    with factory() as session:
        load_archive(session, archive_path, keep_ids=False)
        session.commit()
    return counts


def _import(factory, path: Path, fmt: str, work: Path) -> dict[str, int]:
    found = detect_format(path, fmt)
    limits = ScheduleLimits()
    schedule = read_csv_zip(path, ArchiveLimits(), limits) if found == "csv" else \
        read_schedule(path.read_bytes(), found, limits)
    folder = write_folder(schedule.records(), work / f"{fmt}-{time.monotonic_ns()}")
    return _load(factory, folder)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="schedule-import-bench-"))
    try:
        engine, factory, event_id = synthetic_database(f"sqlite:///{work / 'bench.db'}", args.sessions)
        files = {"json": work / "event.zip"}
        files["json"].write_bytes(_export(factory, event_id, "json"))
        for fmt in FORMAT_IDS:
            files[fmt] = work / f"event.{fmt}"
            files[fmt].write_bytes(_export(factory, event_id, fmt))
        rows = []
        for fmt in FORMAT_IDS:
            floor, took, counts = [], [], {}
            for _ in range(args.repeats):
                t = time.perf_counter()
                _load(factory, files["json"])
                floor.append(time.perf_counter() - t)
                t = time.perf_counter()
                counts = _import(factory, files[fmt], fmt, work)
                took.append(time.perf_counter() - t)
            rows.append({"format": fmt, "bytes": files[fmt].stat().st_size, "sessions": counts.get("sessions"),
                         "speakers": counts.get("speakers"), "import_s": round(min(took), 3),
                         "floor_zip_s": round(min(floor), 3), "ratio": round(min(took) / min(floor), 2)})
        engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'format':<14}{'bytes':>11}{'sessions':>10}{'speakers':>10}{'import s':>10}{'floor s':>10}{'ratio':>7}")
    for r in rows:
        print(f"{r['format']:<14}{r['bytes']:>11}{r['sessions']!s:>10}{r['speakers']!s:>10}{r['import_s']:>10}"
              f"{r['floor_zip_s']:>10}{r['ratio']:>7}")
    out = Path("var/bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "schedule_import.json").write_text(json.dumps({"sessions": args.sessions, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
