"""`tools.cli wait-migrated` (the Deployments' init container): exits 1 with the reason while the database is behind
the migration head, 0 once the migration ran."""

from __future__ import annotations

import os
import subprocess
import sys

from shared.db import upgrade_to_head
from tests.conftest import REPO


def wait_migrated(database_url: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "tools.cli", "wait-migrated", "--timeout", str(timeout),
                           "--interval", "0.2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_waits_for_the_head_and_says_why(sqlite_url) -> None:
    behind = wait_migrated(sqlite_url, 0.5)
    assert behind.returncode == 1
    assert "database not migrated after 0.5 s (at None, head is" in behind.stderr
    upgrade_to_head(sqlite_url)
    ready = wait_migrated(sqlite_url, 5)
    assert ready.returncode == 0, ready.stderr
    assert "database at the migration head" in ready.stdout
