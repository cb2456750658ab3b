"""`tools.cli load-event` writes the database only: it says so when the archive has media (issue 8 item 6)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO
from tests.support.run_command import clean_env


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "var").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=clean_env(VAR_DIR=str(tmp_path / "var")), timeout=120)


@pytest.mark.parametrize("packed", ["folder", "zip"])
def test_load_event_says_plainly_that_media_are_not_loaded(tmp_path, samples_dir, packed):
    source = samples_dir / "open_event" / "legacy" / "FOSSASIA16"
    media = sorted(p for p in (source / "images").rglob("*") if p.is_file())
    assert media
    if packed == "zip":
        path = tmp_path / "FOSSASIA16.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for p in sorted(source.rglob("*")):
                if p.is_file():
                    archive.write(p, p.relative_to(source).as_posix())
        source = path
    assert _cli(tmp_path, "migrate").returncode == 0
    done = _cli(tmp_path, "load-event", str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("event 1 loaded: ")
    assert f"the {len(media)} media files of the archive" in done.stderr
    assert "were not loaded" in done.stderr and "POST /v1/events/import/json" in done.stderr


def test_load_event_names_a_missing_archive_without_a_traceback(tmp_path):
    assert _cli(tmp_path, "migrate").returncode == 0
    done = _cli(tmp_path, "load-event", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert "archive not found" in done.stderr and "Traceback" not in done.stderr
