"""A media host for end-to-end stacks: a real HTTP server on 127.0.0.1, in a thread, answering GETs as told."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MediaHost:
    """Subclasses say how to answer a GET in ``handle``; ``close()`` stops serving."""

    def __init__(self) -> None:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                host.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_body(request: BaseHTTPRequestHandler, data: bytes, content_type: str) -> None:
    request.send_response(200)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8


class SlowMediaHost(MediaHost):
    """Every GET answers a small JPEG after ``delay`` seconds: exports whose time is mostly waiting on media."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests += 1
        time.sleep(self.delay)
        send_body(request, JPEG, "image/jpeg")
