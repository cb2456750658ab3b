"""A round-robin TCP proxy on 127.0.0.1: one address in front of several instances of a service, as a load balancer
puts one host name in front of them in production (layer 4: each new connection goes to the next backend).

A backend that refuses the connection (stopped, killed) is skipped for that connection, so clients only notice when
all are down. Runs as a subprocess (plain threads, not the test's eventlet hub), started and stopped by pid through
``TcpProxy``; it counts connections per backend in ``stats.json`` so a test can see that every instance served.

Standalone: ``python -m tests.support.tcp_proxy --listen 127.0.0.1:9000 --backend 127.0.0.1:9001 --backend ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024


class TcpProxy:
    """Controls the proxy subprocess from a test: ``listen`` and ``backends`` are ``host:port``."""

    def __init__(self, listen: str, backends: list[str], workdir: Path) -> None:
        self.listen, self.backends, self.workdir = listen, list(backends), Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stats_path = self.workdir / "stats.json"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> None:
        self.stats_path.unlink(missing_ok=True)
        log = open(self.workdir / "proxy.log", "ab")  # noqa: SIM115 - handed to the subprocess
        argv = [sys.executable, "-m", "tests.support.tcp_proxy", "--listen", self.listen, "--stats",
                str(self.stats_path), *(arg for b in self.backends for arg in ("--backend", b))]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.stats_path.exists():  # written once the socket listens
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {(self.workdir / 'proxy.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxy not listening on {self.listen} after {timeout} s")
            time.sleep(0.05)

    def connections(self) -> dict[str, int]:
        """Connections handed to each backend so far."""
        try:
            return json.loads(self.stats_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# --- the proxy itself (runs in the subprocess) ----------------------------------------------------------------------


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


class _Balancer:
    def __init__(self, backends: list[str], stats_path: Path) -> None:
        self.backends = backends
        self.stats_path = stats_path
        self.counts = dict.fromkeys(backends, 0)
        self.next = 0
        self.lock = threading.Lock()

    def write_stats(self) -> None:
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.counts))
        os.replace(tmp, self.stats_path)

    def connect(self) -> socket.socket | None:
        with self.lock:
            start, self.next = self.next, (self.next + 1) % len(self.backends)
        for step in range(len(self.backends)):
            backend = self.backends[(start + step) % len(self.backends)]
            host, port = backend.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                continue  # that instance is down: the next one
            upstream.settimeout(None)
            with self.lock:
                self.counts[backend] += 1
                self.write_stats()
            return upstream
        return None

    def serve(self, client: socket.socket) -> None:
        upstream = self.connect()
        if upstream is None:
            client.close()
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--backend", action="append", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)), backlog=128)
    balancer = _Balancer(args.backend, args.stats)
    balancer.write_stats()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        client, _ = server.accept()
        threading.Thread(target=balancer.serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
