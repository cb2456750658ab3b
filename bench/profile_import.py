"""Profile the importer's job on a realistic event, in process: what ``ImportRun.work`` does, minus RabbitMQ.

    python -m bench.profile_import [--sessions 50000] [--database-url URL] [--top 30] [--no-profile]

``run_import`` of ``services/importer/import_job.py`` runs under cProfile on an archive made by
``bench/realistic.py`` against a fresh database (SQLite file by default, or a new database on a PostgreSQL
server); the archive is "downloaded" from a local file by a stand-in for the storage client. Prints the wall time,
the stages the job logs, and the profile's top functions by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import realistic
from bench.export_bench import create_user, fresh_database
from services.importer.import_job import ImportJob, run_import
from shared.config import load_settings
from shared.db import make_engine, make_session_factory, upgrade_to_head


@dataclass
class _Download:
    path: Path
    size: int

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk


class _LocalStorage:
    """Hands out the one archive; media puts are not expected (the archive has none)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def get(self, key: str, **_: object) -> Iterator[_Download]:
        yield _Download(self.path, self.path.stat().st_size)

    def put(self, *_: object, **__: object) -> None:
        raise AssertionError("the benchmark archive has no media")

    def delete(self, key: str) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50000)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: a new SQLite file)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="time only (cProfile slows Python code down)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="profile_import_"))
    db = fresh_database(work, args.database_url)
    engine = None
    try:
        archive = realistic.make_archive(args.sessions, work / "event.zip")
        upgrade_to_head(db.url)
        engine = make_engine(db.url)
        factory = make_session_factory(engine)
        owner = create_user(factory)
        os.environ.update(VAR_DIR=str(work / "var"), DATABASE_URL=db.url)
        job = ImportJob(task_id=str(uuid.uuid4()), key="bench", requester_id=owner, db=factory,
                        settings=load_settings(), storage=_LocalStorage(archive.path))  # type: ignore[arg-type]
        profile = None if args.no_profile else cProfile.Profile()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        result = run_import(job)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - started
        floor = realistic.import_floor(archive.path, work / "floor.db")
        print(f"{db.kind}, {args.sessions:,} sessions, {archive.zip_bytes / 1e6:.1f} MB zip: run_import {seconds:.2f} s"
              f"{' under cProfile' if profile else ''}, floor {floor:.2f} s; counts {result['counts']}")
        if profile is not None:
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
                print(out.getvalue())
    finally:
        if engine is not None:
            engine.dispose()
        if db.drop is not None:
            db.drop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
