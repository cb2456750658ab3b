"""The whole system on one machine: migrations, a local mail sink and the six services, until Ctrl-C.

Services that die are reported on the console and restarted (``tools/supervisor.py``); Ctrl-C stops everything once,
in a few seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from shared.config import ensure_local_secret, load_settings
from shared.db import upgrade_to_head
from tools.stack import REPO, SERVICES, default_env, service_command
from tools.supervisor import Supervisor

MAIL_SINK = "mail-sink"
READY_TIMEOUT = 90.0  # seconds from start to a healthy /health
STOP_TIMEOUT = 7.0  # seconds a service gets to stop gracefully before SIGKILL (the whole stop stays under 10 s)
# Seconds a stopping service lets its running jobs finish before it hands them back to the queue (shared/drain.py):
# well inside STOP_TIMEOUT, so Ctrl-C stays quick and the jobs are requeued cleanly rather than killed.
LOCAL_DRAIN_DEADLINE = 2.0


def say(text: str) -> None:
    print(f"run: {text}", file=sys.stderr, flush=True)


def child_env(var_dir: Path) -> dict[str, str]:
    """The environment every child process gets: the caller's, with the run command's defaults under ``var_dir``."""
    env = {**os.environ, **default_env(var_dir)}
    env.setdefault("SMTP_HOST", "127.0.0.1")
    env.setdefault("SMTP_PORT", "8025")
    env["DRAIN_DEADLINE"] = f"{min(float(env.get('DRAIN_DEADLINE') or LOCAL_DRAIN_DEADLINE), LOCAL_DRAIN_DEADLINE):g}"
    return env


def prepare_maildir(path: Path) -> Path:
    """A Maildir at ``path`` with its ``tmp/ new/ cur/``. aiosmtpd's handler uses ``mailbox.Maildir``, which makes
    them only when ``path`` does not exist yet: an existing empty folder would make every delivery fail."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def busy_ports(env: dict[str, str]) -> list[str]:
    """The local ports the run command must bind that something else holds, as readable reasons."""
    wanted = [(urlsplit(env["GATEWAY_URL"]), "GATEWAY_URL"), (urlsplit(env["STORAGE_URL"]), "STORAGE_URL")]
    ports = [(u.hostname or "127.0.0.1", u.port or 80, f"{name}={u.geturl()}") for u, name in wanted]
    ports.append((env["SMTP_HOST"], int(env["SMTP_PORT"]), f"SMTP_PORT={env['SMTP_PORT']} (the mail sink)"))
    busy = []
    for host, port, what in ports:
        with socket.socket() as s:
            # As the servers do: connections of a previous run in TIME_WAIT do not hold the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(f"port {port} is in use ({what})")
    return busy


def supervise(env: dict[str, str], mail_dir: Path) -> Supervisor:
    supervisor = Supervisor(say=say)
    # A local SMTP sink: every message lands as a file in var/mail/new (a Maildir), readable with any text viewer.
    supervisor.add(MAIL_SINK, [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{env['SMTP_HOST']}:{env['SMTP_PORT']}",
                               "-c", "aiosmtpd.handlers.Mailbox", str(mail_dir)], env, cwd=str(REPO))
    for name in SERVICES:
        argv, service_env = service_command(name, env)
        supervisor.add(name, argv, service_env, cwd=str(REPO))
    return supervisor


def healthy(http: requests.Session, gateway_url: str) -> bool:
    try:
        report = http.get(gateway_url + "/health", timeout=5).json()
        return bool(report["broker"]["ok"] and report["database"]["ok"]) and all(
            report.get("services", {}).get(name, {}).get("ok") for name in SERVICES if name != "api_gateway")
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return False


def main() -> int:
    settings = load_settings()
    var_dir = settings.var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(var_dir)
    # Services refuse the public default secret: use SECRET_KEY if set, else a random one kept in var/secret_key.
    env.update(ensure_local_secret(var_dir))
    busy = busy_ports(env)
    if busy:
        say("cannot start: " + "; ".join(busy) + ". Is another `make run` running? Stop it, or set the variable.")
        return 1
    stop_requests: list[int] = []
    # Ctrl-C, a plain kill, and a closed terminal (SIGHUP reaches only the foreground group, not the services).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _frame: stop_requests.append(signum))
    os.environ.update(env)
    upgrade_to_head(load_settings().database_url)
    mail_dir = prepare_maildir(var_dir / "mail")

    supervisor = supervise(env, mail_dir)
    http = requests.Session()
    http.trust_env = False  # our own loopback address: never through a proxy from the environment
    status = 0
    try:
        if not stop_requests:  # not interrupted during the migrations
            supervisor.start_all()
        deadline, ready = time.monotonic() + READY_TIMEOUT, False
        while not stop_requests:
            supervisor.poll()
            if not ready:
                if healthy(http, env["GATEWAY_URL"]):
                    ready = True
                    print(f"\nready: API {env['GATEWAY_URL']}  (health: {env['GATEWAY_URL']}/health)\n"
                          f"       storage {env['STORAGE_URL']}, database {env['DATABASE_URL']}\n"
                          f"       mail sink smtp://{env['SMTP_HOST']}:{env['SMTP_PORT']}, messages in "
                          f"{mail_dir / 'new'}\n"
                          f"Ctrl-C stops everything.\n", flush=True)
                elif time.monotonic() > deadline:
                    say(f"not healthy after {READY_TIMEOUT:g} s (see {env['GATEWAY_URL']}/health and the log above)")
                    status = 1
                    break
            time.sleep(0.2)
    finally:
        say("stopping...")
        # A second Ctrl-C while stopping kills at once instead of waiting for the deadline.
        signal.signal(signal.SIGINT, lambda *_: supervisor.kill_all())
        started = time.monotonic()
        killed = supervisor.stop_all(timeout=STOP_TIMEOUT)
        if killed:
            say(f"killed after {STOP_TIMEOUT:g} s: {', '.join(killed)}")
        say(f"stopped in {time.monotonic() - started:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
