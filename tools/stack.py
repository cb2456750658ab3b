"""Start, stop and kill the platform's services as separate processes (the run command and the tests use this).

Each service runs in its own ``nameko run`` process, as in production, so a test can stop or ``kill -9`` one of
them while the others keep going.

A service may run as several instances (``scale``), each a process of its own; instances are named by
``instance_name``: the first one is the service's name (``exporter``), the others add their index (``exporter.1``,
``exporter.2``). Of the services with an HTTP server, the first instance binds the address of ``GATEWAY_URL`` or
``STORAGE_URL`` and every other one a free port of its own (``address``), kept across restarts; ``Stack.addresses``
given up front overrides that (storage instances behind a proxy that listens on ``STORAGE_URL``).

``add`` starts one more instance under a new index; with ``same_port_as`` an HTTP service's new instance binds the
address of a running one beside it (eventlet listens with ``SO_REUSEPORT``: the kernel spreads new connections over
the instances still accepting), so a rolling restart (``add``, then ``stop`` the old one) keeps the URL clients use.
``local_ports`` matches an instance with the broker's list of consumers (their client-side ports).
"""

from __future__ import annotations

import os
import signal
import socket
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
# The services with an HTTP server, and the variable that holds the (public) URL of their first instance.
HTTP_URL_VARIABLES = {"api_gateway": "GATEWAY_URL", "storage": "STORAGE_URL"}


def instance_name(service: str, index: int = 0) -> str:
    """The name of a service's instance: ``exporter`` for the first (index 0), ``exporter.2`` for index 2."""
    return service if index == 0 else f"{service}.{index}"


def service_of(name: str) -> str:
    """The service an instance name belongs to (``exporter.2`` -> ``exporter``)."""
    return name.partition(".")[0]


def index_of(name: str) -> int:
    """An instance's index (``exporter`` -> 0, ``exporter.2`` -> 2)."""
    return int(name.partition(".")[2] or 0)


def free_address(host: str = "127.0.0.1") -> str:
    """``host:port`` with a port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return f"{host}:{s.getsockname()[1]}"


@dataclass
class Stack:
    """The six services (each as one or more instances) against one broker vhost, one database and one var
    directory. ``processes`` and the log files (``<instance name>.log``) are per instance."""

    env: dict[str, str]
    log_dir: Path | None = None  # None: inherit the console
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Instance name -> the host:port its HTTP server binds (HTTP services only); filled in on first start.
    addresses: dict[str, str] = field(default_factory=dict)
    # Service -> variables on top of ``env`` for every instance of it (``{"exporter": {"MAX_WORKERS": "4"}}``).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)
    _next_index: dict[str, int] = field(default_factory=dict)  # service -> the lowest index no instance has had

    @property
    def gateway_url(self) -> str:
        return self.env["GATEWAY_URL"]

    def start(self, name: str) -> None:
        """Start one instance (``exporter``, ``exporter.1``, ...): a ``nameko run`` process of its own."""
        service = service_of(name)
        self._next_index[service] = max(self._next_index.get(service, 0), index_of(name) + 1)
        cmd, env = service_command(service, {**os.environ, **self.env, **self.service_env.get(service, {})},
                                   bind=self.address(name))
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = self._logs[name] = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.processes[name] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                                                if out else None)

    def start_all(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start(name)

    def scale(self, service: str, count: int) -> list[str]:
        """Start the instances of ``service`` with indexes below ``count`` that are not running; all their names."""
        names = [instance_name(service, index) for index in range(count)]
        for name in names:
            if not self.running(name):
                self.start(name)
        return names

    def add(self, service: str, *, same_port_as: str | None = None) -> str:
        """Start one more instance of ``service`` under an index none of its instances had yet; its name. An HTTP
        service's new instance binds a free port of its own or, with ``same_port_as``, the address of that instance
        of the same service, beside it (a service without an HTTP server has no port to share)."""
        if same_port_as is not None and service_of(same_port_as) != service:
            raise ValueError(f"{same_port_as} is not an instance of {service}")
        name = instance_name(service, self._next_index.get(service, 0))
        if same_port_as is not None and service in HTTP_URL_VARIABLES:
            self.addresses[name] = self.address(same_port_as)
        self.start(name)
        return name

    def instances(self, service: str) -> list[str]:
        """The instances of ``service`` this stack started and did not ``stop`` (one that died is still listed),
        first instance first."""
        return sorted((n for n in self.processes if service_of(n) == service), key=index_of)

    def address(self, name: str) -> str | None:
        """The host:port instance ``name`` binds, for the services with an HTTP server (else ``None``)."""
        variable = HTTP_URL_VARIABLES.get(service_of(name))
        if variable is None:
            return None
        if name not in self.addresses:
            self.addresses[name] = (self.env[variable].split("//", 1)[1] if name == service_of(name)
                                    else free_address())
        return self.addresses[name]

    def url(self, name: str) -> str:
        """The base URL of one instance's own HTTP server (``http://host:port``)."""
        address = self.address(name)
        if address is None:
            raise ValueError(f"{name} has no HTTP server")
        return f"http://{address}"

    def local_ports(self, name: str, *, listening: bool = False) -> set[int]:
        """The local ports of an instance's TCP connections (to match it with the broker's consumers, listed by
        client-side port), or with ``listening`` of its listening sockets; empty once it is gone."""
        import psutil  # a test and benchmark dependency: the run command, which uses this module too, has no need

        proc = self.processes.get(name)
        try:
            connections = psutil.Process(proc.pid).net_connections("tcp") if proc else []
        except psutil.NoSuchProcess:
            return set()
        return {c.laddr.port for c in connections if (c.status == psutil.CONN_LISTEN) == listening}

    def stop(self, name: str, *, kill: bool = False, timeout: float = 15) -> int | None:
        """SIGTERM (the graceful stop: a drain) or with ``kill`` SIGKILL, and SIGKILL after ``timeout`` seconds if
        it has not exited; its exit code (``-9`` when killed), ``None`` if it was not started."""
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
        return proc.returncode if proc is not None else None

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
        """Poll every running gateway instance's /health until the broker, database and ``required`` services are
        up (a service with several instances counts as up once one of them answers); the first gateway's report."""
        deadline = time.monotonic() + timeout
        last: dict | str = "no answer"
        gateways = [n for n in self.instances("api_gateway") if self.running(n)] or ["api_gateway"]
        reports: dict[str, dict] = {}
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"service {name} exited with {proc.returncode}{self.log_tail(name)}")
            for gateway in gateways:
                if gateway in reports:
                    continue
                try:
                    report = requests.get(self.url(gateway) + "/health", timeout=10).json()
                    last = report
                    services = report.get("services", {})
                    if report["broker"]["ok"] and report["database"]["ok"] and all(
                        services.get(name, {}).get("ok") for name in required if name != "api_gateway"
                    ):
                        reports[gateway] = report
                except (requests.RequestException, ValueError, KeyError) as exc:
                    last = repr(exc)
            if len(reports) == len(gateways):
                return reports[gateways[0]]
            time.sleep(0.2)
        raise RuntimeError(f"stack not healthy after {timeout} s: {last}")

    def log_tail(self, name: str) -> str:
        """The end of an instance's log file, after a newline (empty when it logs to the console)."""
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        return "\n" + path.read_text(errors="replace")[-3000:] if path.exists() else ""


def service_command(name: str, env: dict[str, str], bind: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``nameko run`` command of one service and its environment (``env`` plus the HTTP bind address: ``bind``,
    or the address of ``GATEWAY_URL``/``STORAGE_URL``)."""
    env = dict(env)
    variable = HTTP_URL_VARIABLES.get(name)
    if variable is not None:
        env["WEB_SERVER_ADDRESS"] = bind or env[variable].split("//", 1)[1]
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
