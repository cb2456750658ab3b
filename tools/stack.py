"""Start, stop and kill the platform's services as separate processes (the run command and the tests use this).

Each service runs in its own ``nameko run`` process, as in production, so a test can stop or ``kill -9`` one of
them while the others keep going.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

REPO = Path(__file__).resolve().parent.parent
NAMEKO_CONFIG = REPO / "deploy" / "nameko.yml"
SERVICES = ("storage", "exporter", "importer", "mailer", "webhooks", "api_gateway")


@dataclass
class Stack:
    """The six services against one broker vhost, one database and one var directory."""

    env: dict[str, str]
    log_dir: Path | None = None  # None: inherit the console
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return self.env["GATEWAY_URL"]

    def start(self, name: str) -> None:
        cmd, env = service_command(name, {**os.environ, **self.env})
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = self._logs[name] = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.processes[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                                                if out else None)

    def start_all(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start(name)

    def stop(self, name: str, *, kill: bool = False, timeout: float = 15) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log = self._logs.pop(name, None)
        if log:
            log.close()

    def stop_all(self) -> None:
        # Signal everyone first: a graceful nameko shutdown takes seconds, and they can overlap.
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.processes):
            self.stop(name)

    def running(self, name: str) -> bool:
        proc = self.processes.get(name)
        return proc is not None and proc.poll() is None

    def wait_healthy(self, timeout: float = 60, required: tuple[str, ...] = SERVICES) -> dict:
        """Poll the gateway's /health until the broker, database and ``required`` services are up."""
        deadline = time.monotonic() + timeout
        last: dict | str = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"service {name} exited with {proc.returncode}{self._log_tail(name)}")
            try:
                report = requests.get(self.gateway_url + "/health", timeout=10).json()
                last = report
                services = report.get("services", {})
                if report["broker"]["ok"] and report["database"]["ok"] and all(
                    services.get(name, {}).get("ok") for name in required if name != "api_gateway"
                ):
                    return report
            except (requests.RequestException, ValueError, KeyError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"stack not healthy after {timeout} s: {last}")

    def _log_tail(self, name: str) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        return "\n" + path.read_text(errors="replace")[-3000:] if path.exists() else ""


def service_command(name: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The ``nameko run`` command of one service and its environment (``env`` plus the HTTP bind address)."""
    env = dict(env)
    if name == "api_gateway":
        env["WEB_SERVER_ADDRESS"] = env["GATEWAY_URL"].split("//", 1)[1]
    elif name == "storage":
        env["WEB_SERVER_ADDRESS"] = env["STORAGE_URL"].split("//", 1)[1]
    return [sys.executable, "-m", "nameko", "run", "--config", str(NAMEKO_CONFIG), f"services.{name}.service"], env


def default_env(var_dir: Path) -> dict[str, str]:
    """Embedded defaults: everything under ``var_dir``, RabbitMQ on localhost."""
    return {
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{var_dir / 'platform.db'}"),
        "AMQP_URI": os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"),
        "GATEWAY_URL": os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        "STORAGE_URL": os.environ.get("STORAGE_URL", "http://127.0.0.1:8001"),
        "STORAGE_DIR": os.environ.get("STORAGE_DIR", str(var_dir / "storage")),
    }
