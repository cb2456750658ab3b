"""A webhook receiver for tests: a real HTTP server on 127.0.0.1, in a thread, recording every POST.

It answers ``status`` (200 by default); with ``hold_first`` the first request waits, unanswered, until ``release()``
(a delivery in flight while the sender is killed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lowercase names
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def task_id(self) -> str | None:
        return self.message.get("data", {}).get("task_id")


class WebhookReceiver:
    def __init__(self, status: int = 200, *, hold_first: bool = False, redirect_to: str | None = None) -> None:
        self.status = status
        self.redirect_to = redirect_to
        self.hold_first = hold_first
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                receiver._handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        with self._lock:
            self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
            first = len(self.received) == 1
        if first and self.hold_first:
            self.held.set()
            self._release.wait(120)
        try:
            request.send_response(self.status)
            if self.redirect_to:
                request.send_header("Location", self.redirect_to)
            answer = b"receiver says no" if self.status >= 400 else b"ok"
            request.send_header("Content-Length", str(len(answer)))
            request.end_headers()
            request.wfile.write(answer)
        except OSError:
            pass  # the sender is gone (killed while we held its request)

    def release(self) -> None:
        self._release.set()

    def requests(self, predicate: Callable[[Received], bool] = lambda r: True) -> list[Received]:
        with self._lock:
            return [r for r in self.received if predicate(r)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 60) -> list[Received]:
        """Poll until ``predicate(requests so far)`` holds, with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.requests()
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver condition not met after {timeout} s; got {len(seen)} request(s)")
            time.sleep(0.05)

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
