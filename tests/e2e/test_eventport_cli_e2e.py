"""The ``eventport`` CLI end to end: the installed console script run as a subprocess against a real stack.

Each test logs in with its own config folder (``XDG_CONFIG_HOME``), as a user on their own machine would. The
executable is the virtualenv's ``bin/eventport`` (``pip install -e .``, as ``make install`` does), run with the
checkout first on ``PYTHONPATH`` so it runs this tree's code whatever copy the virtualenv was installed from.
``test_whoami`` and ``test_tasks_*`` need ``GET /v1/me`` and ``GET /v1/tasks`` (contracts of the API branch).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from shared.models import events as m
from tests.conftest import REPO, SAMPLES_DIR, free_port
from tests.support.e2e import PASSWORD, Client, stack_for
from tests.support.hostile_archives import hostile_cases

EVENTPORT = Path(sys.executable).parent / "eventport"
FOSSASIA16 = SAMPLES_DIR / "open_event" / "legacy" / "FOSSASIA16"
BAR = "━"  # what rich draws bars with
IMPORT_MAX_BYTES = 8 * 2**20  # above FOSSASIA16 with its images


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    if not EVENTPORT.exists():
        pytest.fail(f"{EVENTPORT} is missing: install the project (make install, or pip install -e .)")
    users = {"admin": True, "orga": False, "stranger": False}
    with stack_for(tmp_path_factory.mktemp("cli_e2e"), users, IMPORT_MAX_BYTES=str(IMPORT_MAX_BYTES)) as run:
        run.small = run.event("orga", sessions=20)
        run.big = run.event("orga", sessions=1500)
        run.foreign = run.event("stranger", sessions=2)
        run.start()
        yield run


def _env(url: str, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith(("EVENTPORT_", "PYTEST_"))}
    env.update(EVENTPORT_URL=url, XDG_CONFIG_HOME=str(config), PYTHONPATH=str(REPO), **extra)
    return env


class Cli:
    """``eventport`` for one user: its own config folder and working folder."""

    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        self.config = home / "config"
        self.work = home / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        return _env(self.url, self.config, **extra)

    def run(self, *args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        done = subprocess.run([str(EVENTPORT), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(), cwd=self.work, **feed)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self.ok("--json", *args).stdout)

    def login(self, who: str) -> Cli:
        self.ok("login", f"{who}@example.org", "--password-stdin", stdin=PASSWORD + "\n")
        return self

    @property
    def credentials(self) -> Path:
        return self.config / "eventport" / "credentials.json"


@pytest.fixture
def orga(system, tmp_path):
    return Cli(system.url, tmp_path / "orga").login("orga")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- usage, help and connection errors ------------------------------------------------------------------------

def test_help_lists_commands_and_exit_codes(tmp_path):
    done = Cli("http://127.0.0.1:9", tmp_path).ok("--help")
    for command in ("login", "logout", "whoami", "events", "export", "exports", "import", "tasks", "task", "download",
                    "backends", "formats"):
        assert f"    {command} " in done.stdout, command
    for line in ("0    success", "1    the request or the job failed", "2    usage error",
                 "3    cannot reach the server, or not logged in", "130  interrupted"):
        assert line in done.stdout


def test_usage_errors_exit_2(tmp_path):
    cli = Cli("http://127.0.0.1:9", tmp_path)
    for args in (("export", "not-a-number"), ("export", "1", "--media", "sound"), ("frobnicate",), ()):
        done = cli.run(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "usage: eventport" in done.stderr
    done = cli.run("import", str(tmp_path / "missing.zip"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_unreachable_server_and_no_login_exit_3(system, tmp_path):
    nowhere = Cli(f"http://127.0.0.1:{free_port()}", tmp_path / "a")
    for args in (("formats",), ("login", "orga@example.org", "--password-stdin")):
        done = nowhere.run(*args, stdin=PASSWORD + "\n")
        assert done.returncode == 3, done.stderr
        assert done.stderr.count("\n") == 1 and "cannot reach the server" in done.stderr, done.stderr
    done = nowhere.run("--json", "formats")
    assert done.returncode == 3 and json.loads(done.stdout)["error"]["code"] == "unreachable"

    anonymous = Cli(system.url, tmp_path / "b")
    done = anonymous.run("events")
    assert done.returncode == 3 and "not logged in" in done.stderr, done.stderr
    # A token the server refuses (401) is a missing login too.
    done = subprocess.run([str(EVENTPORT), "events"], capture_output=True, text=True, timeout=60,
                          env=anonymous.env(EVENTPORT_TOKEN="not-a-token"))
    assert done.returncode == 3 and "401" in done.stderr and "eventport login" in done.stderr, done.stderr


# --- login ---------------------------------------------------------------------------------------------------

def test_login_keeps_the_token_private_and_never_prints_it(system, tmp_path):
    cli = Cli(system.url, tmp_path)
    done = cli.ok("login", "orga@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.credentials.parent.stat().st_mode) == 0o700
    token = json.loads(cli.credentials.read_text())["servers"][system.url]["token"]
    assert len(token) > 20
    events = cli.run("--json", "events")
    for out in (done, events):
        assert token not in out.stdout and token not in out.stderr
    assert system.small in [e["id"] for e in json.loads(events.stdout)["data"]]
    assert system.foreign not in [e["id"] for e in json.loads(events.stdout)["data"]]
    # The stored token is the server's: it works for a plain HTTP client.
    assert Client(system.url, token).get("/v1/events").status_code == 200

    wrong = cli.run("login", "orga@example.org", "--password-stdin", stdin="wrong password\n")
    assert wrong.returncode == 1 and "invalid_credentials" in wrong.stderr, wrong.stderr
    assert json.loads(cli.credentials.read_text())["servers"][system.url]["token"] == token  # the old one kept

    assert "Logged out" in cli.ok("logout").stdout
    assert not cli.credentials.exists()
    assert cli.run("events").returncode == 3


def test_login_without_a_terminal_or_password_stdin_is_a_usage_error(system, tmp_path):
    done = Cli(system.url, tmp_path).run("login", "orga@example.org")
    assert done.returncode == 2 and "--password-stdin" in done.stderr


def test_whoami(system, orga):  # needs GET /v1/me (API branch)
    me = orga.json("whoami")
    assert me == {"id": system.users["orga"], "email": "orga@example.org", "is_admin": False}
    assert "orga@example.org" in orga.ok("whoami").stdout


# --- export and download -------------------------------------------------------------------------------------

def test_export_wait_out_downloads_the_archive_with_its_sha256(system, orga):
    doc = orga.json("export", str(system.small), "--wait", "--out", "small.zip")
    assert doc["state"] == "SUCCESS" and doc["kind"] == "export" and doc["event_id"] == system.small
    archive = orga.work / "small.zip"
    assert sha256(archive) == doc["result"]["sha256"] == doc["downloaded"]["sha256"]
    assert doc["downloaded"]["size"] == archive.stat().st_size == doc["result"]["size"]
    assert not (orga.work / "small.zip.part").exists()
    with zipfile.ZipFile(archive) as z:
        assert {"event", "sessions", "speakers", "meta"} <= set(z.namelist())

    # The same in human form, piped: no bar, no escape codes; the task id alone without --wait.
    done = orga.ok("export", str(system.small), "--format", "ical", "--wait", "--out", "small.ics")
    assert BAR not in done.stderr + done.stdout and "\x1b[" not in done.stderr + done.stdout
    assert "Saved small.ics" in done.stdout and (orga.work / "small.ics").read_bytes().startswith(b"BEGIN:VCALENDAR")
    task_id = orga.ok("export", str(system.small)).stdout.strip()
    assert orga.json("task", task_id)["id"] == task_id
    # The event's export history has them all, newest first.
    history = orga.json("exports", str(system.small))["data"]
    assert history[0]["task_id"] == task_id and history[2]["task_id"] == doc["id"]
    assert [row["format"] for row in history[:3]] == ["json", "ical", "json"]
    assert doc["id"] in orga.ok("exports", str(system.small)).stdout


def test_export_shows_a_progress_bar_on_a_terminal(system, orga):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([str(EVENTPORT), "export", str(system.big), "--wait"], stdin=subprocess.DEVNULL,
                            stdout=secondary, stderr=secondary, cwd=orga.work,
                            env=orga.env(TERM="xterm-256color", COLUMNS="120", PYTHONIOENCODING="utf-8"))
    os.close(secondary)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO once the process closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    reader.join(10)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert BAR in screen and "export" in screen and "SUCCESS" in screen, screen[-3000:]


def test_download_resumes_an_interrupted_download(system, orga):
    task_id = orga.ok("export", str(system.big)).stdout.strip()
    task = Client.login(system.url, "orga@example.org", PASSWORD).wait_task(f"/v1/tasks/{task_id}", timeout=120)
    assert task["state"] == "SUCCESS", task
    size = task["result"]["size"]
    assert size > 50_000, size
    part = orga.work / "big.zip.part"
    # Slow enough to be interrupted (about 8 s for the whole archive), then Ctrl-C once some bytes are there.
    proc = subprocess.Popen([str(EVENTPORT), "download", task_id, "--out", "big.zip", "--limit-rate",
                             str(max(2048, size // 8))], cwd=orga.work, env=orga.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no bytes downloaded in 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert err.count("\n") == 1 and "interrupted" in err and "resume" in err and "Traceback" not in err, err
    kept = part.stat().st_size
    assert 0 < kept < size and not (orga.work / "big.zip").exists()

    doc = orga.json("download", task_id, "--out", "big.zip")
    assert doc["resumed_from"] == kept
    assert doc["size"] == size and doc["sha256"] == task["result"]["sha256"] == sha256(orga.work / "big.zip")
    assert not part.exists()

    # A .part that is not a prefix of the archive is caught by the sha256 and removed, never renamed into place.
    part.write_bytes(b"x" * 1000)
    bad = orga.run("download", task_id, "--out", "big.zip")
    assert bad.returncode == 1 and "checksum_mismatch" in bad.stderr and not part.exists(), bad.stderr
    # Without --out: the archive's own name, in the working folder.
    assert orga.json("download", task_id)["file"] == f"event{system.big}.zip"
    assert sha256(orga.work / f"event{system.big}.zip") == task["result"]["sha256"]


def test_refusals_exit_1_with_the_server_message(system, orga):
    done = orga.run("export", str(system.foreign))
    assert done.returncode == 1 and "HTTP 403" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    done = orga.run("--json", "task", "no-such-task")
    assert done.returncode == 1 and "HTTP 404" in done.stderr
    assert json.loads(done.stdout)["error"] == {"code": "task_not_found", "status": 404,
                                                "message": "Task no-such-task does not exist."}
    done = orga.run("export", str(system.small), "--format", "nope")
    assert done.returncode == 1 and "unknown_format" in done.stderr


# --- import --------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not FOSSASIA16.is_dir(), reason=f"samples not found at {SAMPLES_DIR}")
def test_import_wait_of_a_real_sample_folder(system, orga):
    doc = orga.json("import", str(FOSSASIA16), "--wait")
    assert doc["state"] == "SUCCESS" and doc["kind"] == "import", doc
    event_id = doc["result"]["id"]
    assert doc["result"]["counts"]["sessions"] > 0
    assert event_id in [e["id"] for e in orga.json("events")["data"]]
    with system.env.db() as session:
        assert session.get(m.Event, event_id).name == doc["result"]["event_name"]


def test_import_failure_exits_1_with_the_problem(system, orga, tmp_path):
    case = next(c for c in hostile_cases(tmp_path / "hostile") if c.limits is None and c.path.is_file()
                and 0 < c.path.stat().st_size < 1_000_000 and c.expected_file is not None)
    done = orga.run("--json", "import", str(case.path), "--format", "json", "--wait")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "FAILURE" and doc["result"]["code"] == case.expected_code, doc
    assert f"({case.expected_code})" in done.stderr and "import" in done.stderr
    done = orga.run("import", str(case.path), "--format", "json", "--wait")
    assert done.returncode == 1 and case.expected_code in done.stderr and case.expected_file in done.stderr


def test_an_oversized_upload_is_refused_before_it_is_sent(system, orga):
    big = orga.work / "big-upload.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as z:
        z.writestr("event", os.urandom(IMPORT_MAX_BYTES + 2**20))
    done = orga.run("import", str(big), "--wait")
    assert done.returncode == 1, done.stderr
    assert "(too_large, HTTP 413)" in done.stderr and str(IMPORT_MAX_BYTES) in done.stderr, done.stderr


# --- lists ---------------------------------------------------------------------------------------------------

def test_formats_and_backends(system, orga):
    assert "json" in [f["identifier"] for f in orga.json("formats")["data"]]
    backends = orga.json("backends")["data"]
    assert backends[0]["default"] is True
    assert "ID" in orga.ok("backends").stdout


def test_tasks_follow_every_page(system, orga):  # needs GET /v1/tasks (API branch)
    ids = [orga.ok("export", str(system.small)).stdout.strip() for _ in range(3)]
    listed = orga.json("tasks", "--kind", "export", "--event", str(system.small), "--page-size", "1")["data"]
    assert set(ids) <= {t["id"] for t in listed}
    assert all(t["kind"] == "export" and t["event_id"] == system.small for t in listed)
    assert len({t["id"] for t in listed}) == len(listed)  # no page read twice
    client = Client.login(system.url, "orga@example.org", PASSWORD)
    for task_id in ids:
        client.wait_task(f"/v1/tasks/{task_id}", timeout=120)
    done = orga.json("tasks", "--state", "success", "--kind", "export")["data"]
    assert set(ids) <= {t["id"] for t in done} and {t["state"] for t in done} == {"SUCCESS"}
    assert ids[0] in orga.ok("tasks").stdout
