"""Scratch directories of import jobs (``VAR_DIR/scratch/<task_id>-<random>``), and the clean-up of those a crash
left behind.

A job holds an exclusive ``flock`` on ``.lock`` inside its directory for as long as it runs; the kernel drops the
lock when the process dies, however it dies. ``sweep`` (at start-up and on a timer) removes every directory whose
lock it can take, so a live job's directory, in this process or another one on the same host, is never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
UNLOCKED_GRACE = 60.0  # a directory without a lock file yet may be a job between mkdtemp and flock


@contextmanager
def job_scratch(root: Path, task_id: str) -> Iterator[Path]:
    """A fresh directory for one job, locked while the job runs and removed afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = Path(tempfile.mkdtemp(prefix=f"{task_id}-", dir=root))
        fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        # Waits only while another importer process's sweep holds it: between our open and our flock that sweep
        # saw an unlocked directory and removed it (it held the lock meanwhile). Then the file is unlinked: again.
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep(root: Path) -> int:
    """Remove the scratch directories no running job holds; returns how many."""
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.iterdir():
        if not path.is_dir():
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            try:
                if time.time() - path.stat().st_mtime > UNLOCKED_GRACE:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                pass
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live job
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d scratch director%s left by a crashed import under %s", removed,
                 "y" if removed == 1 else "ies", root)
    return removed
