"""Extra processes of one service beside a ``Stack`` (rolling restarts, the replica benchmark).

Every instance runs the service's ordinary command (``tools.stack.service_command``) against the same broker vhost
and database, so the instances share the service's queues; HTTP services bind the same port (eventlet listens with
``SO_REUSEPORT``), and the kernel spreads new connections over the instances still accepting.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from tools.stack import REPO, service_command


def local_ports(pid: int, listening: bool = False) -> set[int]:
    """The local ports of a process's TCP connections (to match it with the broker's list of consumers), or with
    ``listening`` of its listening sockets."""
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in connections if (c.status == psutil.CONN_LISTEN) == listening}


@dataclass
class Instance:
    name: str  # "exporter#2": the service and the instance's number
    proc: subprocess.Popen
    log: IO[bytes]
    log_path: Path

    def local_ports(self, listening: bool = False) -> set[int]:
        return local_ports(self.proc.pid, listening)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop (drain)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code, SIGKILLing the process after ``timeout`` seconds (then ``-9``)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


@dataclass
class Instances:
    """Starts numbered instances of services with ``env`` (on top of this process's), each logging to its own file
    under ``log_dir``; ``stop_all`` SIGTERMs what is still running and SIGKILLs it after ``timeout``."""

    env: dict[str, str]
    log_dir: Path
    started: list[Instance] = field(default_factory=list)

    def start(self, service: str, extra_env: dict[str, str] | None = None) -> Instance:
        number = sum(1 for i in self.started if i.name.partition("#")[0] == service) + 1
        cmd, env = service_command(service, {**os.environ, **self.env, **(extra_env or {})})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{service}-{number}.log"
        log = open(path, "ab")  # noqa: SIM115 - closed by Instance.wait
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        instance = Instance(f"{service}#{number}", proc, log, path)
        self.started.append(instance)
        return instance

    def running(self, service: str) -> list[Instance]:
        return [i for i in self.started if i.name.partition("#")[0] == service and i.proc.poll() is None]

    def stop_all(self, timeout: float = 30) -> None:
        for instance in self.started:
            instance.terminate()
        for instance in self.started:
            if not instance.log.closed:
                instance.wait(timeout)
