"""The run command as a user starts it: ``make run`` in a copy of the working tree, in a session of its own (as a
terminal's foreground job), with its console captured. Ctrl-C is SIGINT to that process group, as a terminal sends it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tests.conftest import REPO, SAMPLES_DIR

_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", ".pytest_cache", ".ruff_cache", "*.zip")
# The platform's variables: a test's run command gets only what it sets, like a fresh shell.
PLATFORM_VARS = ("VAR_DIR", "DATABASE_URL", "AMQP_URI", "GATEWAY_URL", "STORAGE_URL", "STORAGE_INTERNAL_URL",
                 "STORAGE_DIR", "SMTP_HOST", "SMTP_PORT", "SECRET_KEY")


def repo_copy(parent: Path) -> Path:
    """``parent/repo``: the working tree (uncommitted changes included, no ``var/``), with a ``.venv`` that uses the
    test's virtualenv (links to its ``bin``/``lib``: make's install stamps land in the copy, not in the shared
    virtualenv), and ``parent/shared/samples`` linked to the samples so the README's ``../shared/samples`` resolves."""
    repo = parent / "repo"
    shutil.copytree(REPO, repo, ignore=_NOT_COPIED, symlinks=True)
    venv, copy = Path(sys.prefix), repo / ".venv"
    copy.mkdir()
    if (venv / "include").exists():
        (copy / "include").symlink_to(venv / "include")
    shutil.copy(venv / "pyvenv.cfg", copy / "pyvenv.cfg")
    _own_bin_and_site_packages(venv, copy)
    if SAMPLES_DIR.is_dir():
        (parent / "shared").mkdir(exist_ok=True)
        (parent / "shared" / "samples").symlink_to(SAMPLES_DIR)
    return repo


def _own_bin_and_site_packages(venv: Path, copy: Path) -> None:
    """``copy/bin`` and ``copy/lib/.../site-packages``: real directories of links to the virtualenv's entries, less
    the project's own install, so that make's ``pip install -e .`` in the copy installs into the copy (its
    ``bin/eventport`` runs the copy's code) and never rewrites the shared virtualenv to point at this temporary
    copy (which broke its ``bin/eventport`` for everyone once the copy was deleted). Dependencies are the links:
    ``pip install -r requirements.txt`` finds them installed. ``activate`` names the copy."""
    (copy / "bin").mkdir()
    for entry in (venv / "bin").iterdir():
        if entry.name not in ("eventport", "activate"):
            (copy / "bin" / entry.name).symlink_to(entry)
    activate = (venv / "bin" / "activate").read_text()
    (copy / "bin" / "activate").write_text(re.sub(r"(?m)^VIRTUAL_ENV=.*$", f'VIRTUAL_ENV="{copy}"', activate))
    for shared in venv.glob("lib/python*/site-packages"):
        own = copy / shared.relative_to(venv)
        own.mkdir(parents=True)
        for entry in shared.iterdir():
            if not re.match(r"(__editable__[._]+)?eventport[-_.]", entry.name):
                (own / entry.name).symlink_to(entry)
    if (venv / "lib64").exists():
        (copy / "lib64").symlink_to("lib")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_VARS}
    env.pop("PYTEST_CURRENT_TEST", None)
    return {**env, **extra}


class RunCommand:
    """``make run`` in ``repo``; ``output`` is the console so far (stdout and stderr, as a terminal shows them)."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo = repo
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["make", "run"], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self._chunks.append(line)

    @property
    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds since the start when ``text`` showed on the console; fails if it did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"make run exited with {self.proc.returncode} before {text!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on the console after {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        return time.monotonic() - self.started

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]

    def processes(self) -> list[psutil.Process]:
        """make and everything it started (services lead process groups of their own but stay descendants)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def service_pid(self, name: str) -> int | None:
        for proc in self.processes():
            try:
                if f"services.{name}.service" in " ".join(proc.cmdline()):
                    return proc.pid
            except psutil.NoSuchProcess:
                continue
        return None

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        """Leave nothing behind, whatever state the run is in."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        wait_gone(procs, timeout=10)
        self._reader.join(5)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Poll until every process has exited (psutil.wait_procs needs select.poll, which eventlet's patch removes);
    returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)
