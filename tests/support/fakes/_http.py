"""What both fakes share: a threaded HTTP(S) server, request-body streaming (Content-Length or chunked), Range."""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

COPY_CHUNK = 256 * 1024


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services and the clients' pools expect

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("FAKE_VERBOSE"):
            super().log_message(format, *args)

    # -- responses ---------------------------------------------------------------------------------------------------

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(value).encode(), "application/json", headers)

    def send_text(self, status: int, text: str) -> None:
        self.send_body(status, text.encode(), "text/plain; charset=utf-8")

    def send_file_range(self, path: Path, size: int, headers: dict[str, str], content_type: str) -> None:
        """The file, or the single byte range asked for (206), or 416; streamed from disk."""
        span = parse_range(self.headers.get("Range"), size)
        if span == "unsatisfiable":
            self.send_body(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            return
        start, stop = span if span else (0, size)
        self.send_response(206 if span else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        if span:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:
            f.seek(start)
            remaining = stop - start
            while remaining > 0:
                data = f.read(min(COPY_CHUNK, remaining))
                if not data:
                    break
                self.wfile.write(data)
                remaining -= len(data)

    # -- request bodies ----------------------------------------------------------------------------------------------

    body_consumed = False

    def body_chunks(self) -> Iterator[bytes]:
        """The request body in pieces, de-chunked; raises ``BadRequest`` if it ends early or is malformed."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            yield from self._dechunk()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            while length > 0:
                data = self.rfile.read(min(COPY_CHUNK, length))
                if not data:
                    raise BadRequest("body shorter than Content-Length")
                length -= len(data)
                yield data
        self.body_consumed = True

    def handle_one_request(self) -> None:
        self.body_consumed = False
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up mid-request (an aborted upload): nothing to answer.
            self.close_connection = True

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if not self.body_consumed and self.command in ("POST", "PUT"):
            # Answering before the whole body was read (an error): the rest of it would be taken for the next
            # request, so this connection ends here.
            self.send_header("Connection", "close")
            self.close_connection = True

    def _dechunk(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\r\n"):
                raise BadRequest("truncated chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(f"malformed chunk size {line[:40]!r}") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while size > 0:
                data = self.rfile.read(min(COPY_CHUNK, size))
                if not data:
                    raise BadRequest("truncated chunked body")
                size -= len(data)
                yield data
            if self.rfile.read(2) != b"\r\n":
                raise BadRequest("malformed chunk terminator")

    def read_body(self, limit: int = 1024 * 1024) -> bytes:
        data = bytearray()
        for chunk in self.body_chunks():
            data += chunk
            if len(data) > limit:
                raise BadRequest("body too large for this route")
        return bytes(data)


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, stop)`` for one satisfiable range, ``"unsatisfiable"``, or ``None`` (send everything)."""
    if not header:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None  # malformed or multi-range: ignored, as RFC 9110 allows
    first, last = match.group(1), match.group(2)
    if not first:  # suffix
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    stop = size if not last else min(int(last) + 1, size)
    if stop <= start:
        return None
    return start, stop


def common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True, help="written with the bound port(s) once listening")
    parser.add_argument("--data-dir", required=True)
    return parser


def make_server(
    host: str, port: int, handler: type[Handler], tls: tuple[str, str] | None = None
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def serve_forever(servers: list[ThreadingHTTPServer], port_file: str, ports: Any) -> None:
    """Serve every server; announce ``ports`` through ``port_file`` (written atomically) once all are listening."""
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(ports) if not isinstance(ports, int) else str(ports))
    os.replace(tmp, port_file)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
