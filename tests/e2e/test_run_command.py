"""`make run` as a user runs it (issue 8, "Running it"): in a copy of the working tree, on a machine where only Python
and RabbitMQ are available, with an existing empty ``var/mail``; then a service killed under it, then Ctrl-C.

The tests share one run and are in the order a user meets them; the last one stops it.
"""

from __future__ import annotations

import os
import smtplib
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import REPO, free_port
from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost
from tests.support.run_command import RunCommand, clean_env, repo_copy, wait_gone

READY_BOUND = 60.0  # issue 8 item 20: a fresh clone reaches "ready" in well under a minute
STOP_BOUND = 10.0  # issue 8 item 19: Ctrl-C stops everything in under 10 s


@dataclass
class Run:
    command: RunCommand
    repo: Path
    gateway_url: str
    smtp_port: int
    ready_after: float


def _no_postgresql(bin_dir: Path) -> str:
    """A PATH on which PostgreSQL's tools fail as if they were not installed."""
    bin_dir.mkdir()
    for tool in ("pg_ctlcluster", "pg_isready", "psql"):
        path = bin_dir / tool
        path.write_text("#!/bin/sh\necho \"$0: PostgreSQL is not installed on this test machine\" >&2\nexit 127\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    parent = tmp_path_factory.mktemp("make_run")
    repo = repo_copy(parent)
    (repo / "var" / "mail").mkdir(parents=True)  # exists and is empty: mailbox.Maildir would not fill it in
    vhost = create_vhost()
    gateway_url, smtp_port = f"http://127.0.0.1:{free_port()}", free_port()
    env = clean_env(AMQP_URI=amqp_uri(vhost), GATEWAY_URL=gateway_url, STORAGE_URL=f"http://127.0.0.1:{free_port()}",
                    SMTP_PORT=str(smtp_port), PATH=_no_postgresql(parent / "bin"),
                    PG_PORT=str(free_port()),  # nothing listens there
                    ENSURE_TIMEOUT="5")
    command = RunCommand(repo, env)
    try:
        ready_after = command.wait_for("\nready: ", timeout=120)
        yield Run(command=command, repo=repo, gateway_url=gateway_url, smtp_port=smtp_port, ready_after=ready_after)
    finally:
        command.kill()
        delete_vhost(vhost)


def test_make_run_needs_python_and_rabbitmq_only(run):
    console = run.command.output.split("\nready: ", 1)[0]
    assert "-r requirements.txt" in console  # make run installs the runtime dependencies...
    assert "requirements-dev.txt" not in console  # ...and not the test tools
    assert "PostgreSQL" not in console and "postgres" not in console.lower()
    assert run.ready_after < READY_BOUND, f"ready after {run.ready_after:.1f} s"


def test_mail_sink_stores_each_message_in_var_mail_new(run):
    subject = f"sink check {uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", run.smtp_port, timeout=10) as smtp:
        smtp.sendmail("platform@localhost", ["orga@example.org"], f"Subject: {subject}\r\n\r\nhello\r\n")
    new = run.repo / "var" / "mail" / "new"
    deadline = time.monotonic() + 10
    while not any(subject in p.read_text(errors="replace") for p in new.glob("*")):
        assert time.monotonic() < deadline, f"no message in {new}:\n{run.command.tail()}"
        time.sleep(0.05)


def _health(url: str) -> dict:
    try:
        return requests.get(url + "/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return {}


def test_a_dead_service_is_reported_and_restarted(run):
    pid = run.command.service_pid("exporter")
    assert pid is not None, run.command.tail()
    psutil.Process(pid).kill()
    run.command.wait_for(f"exporter (pid {pid}) exited with code -9 (SIGKILL); restarting in", timeout=5)
    run.command.wait_for("exporter restarted", timeout=30)
    deadline = time.monotonic() + 60
    while not _health(run.gateway_url).get("services", {}).get("exporter", {}).get("ok"):
        assert time.monotonic() < deadline, f"exporter not healthy again:\n{run.command.tail()}"
        time.sleep(0.2)
    assert run.command.service_pid("exporter") not in (None, pid)


def test_ctrl_c_stops_everything_in_under_10_s_without_traceback(run):
    procs = run.command.processes()
    assert len(procs) >= 9, [p.cmdline() for p in procs]  # make, the run command, the mail sink, six services
    before = len(run.command.output)
    started = time.monotonic()
    run.command.ctrl_c()
    try:
        run.command.proc.wait(STOP_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"make run still running {STOP_BOUND} s after Ctrl-C:\n{run.command.tail()}")
    alive = wait_gone(procs, timeout=max(0.0, STOP_BOUND - (time.monotonic() - started)))
    assert not alive, f"still running after Ctrl-C: {[p.pid for p in alive]}"
    run.command._reader.join(5)
    console = run.command.output[before:]
    assert "Traceback" not in console, console
    assert "run: stopped in" in console, console


def test_a_busy_port_is_named_and_nothing_starts(tmp_path):
    vhost = create_vhost()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = clean_env(VAR_DIR=str(tmp_path / "var"), AMQP_URI=amqp_uri(vhost), GATEWAY_URL=f"http://127.0.0.1:{port}",
                        STORAGE_URL=f"http://127.0.0.1:{free_port()}", SMTP_PORT=str(free_port()))
        try:
            done = subprocess.run([sys.executable, "-m", "tools.run"], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=120, start_new_session=True)
        finally:
            delete_vhost(vhost)
    assert done.returncode == 1
    assert f"port {port} is in use (GATEWAY_URL=http://127.0.0.1:{port})" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_the_copy_installs_nothing_into_the_shared_virtualenv(tmp_path):
    # seen: after this module ran, the shared virtualenv's bin/eventport started with
    # "#!/tmp/pytest-of-root/.../make_run0/repo/.venv/bin/python" and its editable install mapped eventport to that
    # deleted copy ("cannot execute: required file not found" for everyone, test_eventport_cli_e2e included)
    shared = Path(sys.prefix)
    before = {p: p.read_bytes() for p in [shared / "bin" / "eventport", *shared.glob("lib/python*/site-packages/"
                                                                                     "__editable__*eventport*")]}
    repo = repo_copy(tmp_path)
    make = subprocess.run(["make", "install"], cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=240)
    assert make.returncode == 0 and "-e ." in make.stdout, make.stdout + make.stderr
    assert {p: p.read_bytes() for p in before} == before
    where = subprocess.run([repo / ".venv" / "bin" / "python", "-c", "import eventport; print(eventport.__file__)"],
                           cwd="/", capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(repo / "eventport" / "__init__.py"), where.stderr
    # the copy's own eventport, found on the PATH its activate sets, runs the copy's code
    found = subprocess.run(["bash", "-c", ". .venv/bin/activate && command -v eventport && eventport --version"],
                           cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[0] == str(repo / ".venv" / "bin" / "eventport")
    assert found.stdout.splitlines()[1].startswith("eventport ")
