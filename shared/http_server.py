"""The HTTP server under every ``@http`` entrypoint (gateway and storage data plane): deadlines and separate pools.

nameko reads a request's headers in the connection's own greenthread, then takes a worker slot (``max_workers``,
shared by every entrypoint of the container) and lets the handler read the body *inside* the slot. A client that
sends headers and then nothing, or a byte a second, held a slot for as long as it liked: ten of them took the whole
service down. Here:

- **Headers** (request line included, and the wait for the next request on a kept-alive connection) must arrive
  within ``HTTP_HEADER_TIMEOUT`` seconds in total, however steadily they drip; else ``408`` (or a silent close when
  nothing came at all).
- **Small bodies** (every route not declared ``stream=True``: JSON and no body) are read whole, capped at
  ``HTTP_MAX_BODY_BYTES`` (``413``) and within ``HTTP_BODY_TIMEOUT`` (``408``), *before* a worker slot is taken.
- **Streamed bodies** (uploads, archive imports, storage PUTs) wait for their first byte (``HTTP_BODY_TIMEOUT``)
  outside any slot, then take one of ``HTTP_STREAM_SLOTS`` (a pool of their own, smaller than ``max_workers``, so
  quick routes and event handlers always find a worker; a request that waited ``HTTP_STREAM_QUEUE_TIMEOUT`` gets
  ``503 server_busy``), and must keep a minimum rate: each read of ``n`` bytes (at most ``HTTP_MIN_UPLOAD_RATE`` x
  ``HTTP_MIN_RATE_WINDOW``) has ``HTTP_MIN_RATE_WINDOW + n / HTTP_MIN_UPLOAD_RATE`` seconds, else ``408
  upload_too_slow``.
- Any single socket read or write waits at most ``HTTP_SOCKET_TIMEOUT`` (slow readers of downloads).
- Streams from our own services (storage PUTs on signed links: the exporter pauses while it fetches a slow media
  file; the gateway relays user uploads it already paces) are declared ``paced=False``: no minimum rate, but at
  most ``HTTP_STREAM_IDLE_TIMEOUT`` without a byte (``408 upload_stalled``), and a longer wait for a slot.
- A connection whose request body was not read to its end is closed after the answer, never drained.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import eventlet
from eventlet import wsgi
from eventlet.semaphore import Semaphore
from nameko.web.server import HttpOnlyProtocol, WebServer

# environ keys set by the protocol for the entrypoint
CLOSE_CONNECTION = "platform.close_connection"  # call it to close the connection after this response
BODY_DONE = "platform.body_done"  # True once the request body was read to its end (or there is none)

RESERVED_WORKERS = 4  # worker slots that streamed bodies never take (quick routes, event handlers, RPC)


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float
    body_timeout: float
    socket_timeout: float
    max_body_bytes: int
    min_upload_rate: int
    min_rate_window: float
    stream_slots: int | None  # None: max_workers - RESERVED_WORKERS (at least 1)
    stream_queue_timeout: float
    stream_idle_timeout: float  # unpaced streams: longest silence
    listen_backlog: int  # connections the kernel queues before they are accepted (capped by net.core.somaxconn)

    def slots_for(self, max_workers: int) -> int:
        if self.stream_slots is not None:
            return max(1, self.stream_slots)
        return max(1, max_workers - RESERVED_WORKERS if max_workers > RESERVED_WORKERS else max_workers // 2)


def load_limits(environ: Mapping[str, str] | None = None) -> HttpLimits:
    environ = os.environ if environ is None else environ

    def get(name: str, default: str) -> str:
        value = environ.get(name)
        return default if value in (None, "") else value

    slots = get("HTTP_STREAM_SLOTS", "")
    return HttpLimits(
        header_timeout=float(get("HTTP_HEADER_TIMEOUT", "10")),
        body_timeout=float(get("HTTP_BODY_TIMEOUT", "30")),
        socket_timeout=float(get("HTTP_SOCKET_TIMEOUT", "60")),
        max_body_bytes=int(get("HTTP_MAX_BODY_BYTES", str(1024 * 1024))),
        min_upload_rate=max(1, int(get("HTTP_MIN_UPLOAD_RATE", "8192"))),
        min_rate_window=float(get("HTTP_MIN_RATE_WINDOW", "30")),
        stream_slots=int(slots) if slots else None,
        stream_queue_timeout=float(get("HTTP_STREAM_QUEUE_TIMEOUT", "60")),
        # The exporter's own read timeout on its PUT is 300 s: storage waits as long for it.
        stream_idle_timeout=float(get("HTTP_STREAM_IDLE_TIMEOUT", "300")),
        listen_backlog=max(1, int(get("HTTP_LISTEN_BACKLOG", "1024"))),
    )


class RequestTooSlow(Exception):
    """A request did not arrive within its deadline: answered ``408`` with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes for this endpoint.")
        self.limit = limit


class ServerBusy(Exception):
    """No stream slot freed up within the queue timeout."""


def _raw_response(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class GuardedProtocol(HttpOnlyProtocol):
    """eventlet's protocol with a deadline on the request line and headers, and a close hook for the app."""

    def handle_one_request(self) -> None:
        limits: HttpLimits = self.server.limits
        self.raw_requestline = b""
        timer = eventlet.Timeout(limits.header_timeout)
        self._header_timer = timer
        try:
            super().handle_one_request()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self.close_connection = 1
            if self.raw_requestline:  # something came: say why we hang up
                try:
                    self.wfile.write(_raw_response(
                        "408 Request Timeout", "request_timeout",
                        f"The request headers did not arrive within {limits.header_timeout:g} s."))
                    self.wfile.flush()
                except OSError:
                    pass
        finally:
            timer.cancel()

    def _refuse(self, status: str, code: str, message: str) -> None:
        """Answer before the app saw anything (eventlet's own answers here have an empty body) and hang up."""
        self.close_connection = 1
        try:
            self.wfile.write(_raw_response(status, code, message))
            self.wfile.flush()
        except OSError:
            pass

    def _read_request_line(self) -> bytes:
        line = super()._read_request_line()
        limit = self.server.url_length_limit
        if len(line) >= limit:
            self._refuse("414 URI Too Long", "uri_too_long",
                         f"The request line is longer than {limit} bytes; shorten the query string or path.")
            return b""  # nothing more is read: eventlet closes the connection
        return line

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        except (wsgi.HeaderLineTooLong, wsgi.HeadersTooLarge):
            self._refuse("431 Request Header Fields Too Large", "headers_too_large",
                         f"A request header line is longer than {wsgi.MAX_HEADER_LINE} bytes, or all of them "
                         f"together longer than {wsgi.MAX_TOTAL_HEADER_SIZE}.")
            return False

    def get_environ(self) -> dict[str, Any]:
        self._header_timer.cancel()  # the headers are in: the body has deadlines of its own
        env = super().get_environ()
        env[CLOSE_CONNECTION] = self._close_after_response
        inp = env["eventlet.input"]
        env[BODY_DONE] = not inp.chunked_input and not inp.content_length
        return env

    def _close_after_response(self) -> None:
        self.close_connection = 1


class GuardedWebServer(WebServer):
    """nameko's shared web server with ``GuardedProtocol``, socket timeouts and the stream-slot pool."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = load_limits()
        self._stream_slots: Semaphore | None = None

    def start(self) -> None:
        # nameko's start with a listen backlog of our own: eventlet's default of 50 drops the SYNs of a burst of new
        # clients beyond it (200 pollers connecting at once), and each then waits a retransmission (1 s, then 3 s).
        if not self._starting:
            self._starting = True
            self._sock = eventlet.listen(self.bind_addr, backlog=load_limits().listen_backlog)
            self._sock.settimeout(None)  # as nameko does (kombu sets a default socket timeout)
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)

    def get_wsgi_server(self, sock: Any, wsgi_app: Any, protocol: Any = GuardedProtocol,
                        debug: bool = False) -> wsgi.Server:
        self.limits = load_limits()
        self._stream_slots = Semaphore(self.limits.slots_for(self.container.max_workers))
        server = super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)
        server.limits = self.limits
        server.socket_timeout = self.limits.socket_timeout  # applied to each accepted socket by WebServer.run
        return server

    def acquire_stream_slot(self, paced: bool = True) -> None:
        assert self._stream_slots is not None
        # Our own services' streams wait as long as they would wait for a silent peer; clients get an answer sooner.
        timeout = self.limits.stream_queue_timeout if paced else max(self.limits.stream_queue_timeout,
                                                                     self.limits.stream_idle_timeout)
        if not self._stream_slots.acquire(timeout=timeout):
            raise ServerBusy

    def release_stream_slot(self) -> None:
        assert self._stream_slots is not None
        self._stream_slots.release()


def buffer_body(environ: dict[str, Any], limits: HttpLimits) -> None:
    """Read a small body whole (capped, with a deadline) and put it back in ``environ`` as ``wsgi.input``."""
    inp = environ["wsgi.input"]
    if environ.get(BODY_DONE):
        environ["wsgi.input"] = io.BytesIO(b"")
        return
    declared = inp.content_length if not inp.chunked_input else None
    if declared is not None and declared > limits.max_body_bytes:
        raise BodyTooLarge(limits.max_body_bytes)
    parts: list[bytes] = []
    size = 0
    try:
        with eventlet.Timeout(limits.body_timeout):
            while chunk := inp.read(min(65536, limits.max_body_bytes + 1 - size)):
                parts.append(chunk)
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise BodyTooLarge(limits.max_body_bytes)
    except eventlet.Timeout:
        raise RequestTooSlow("request_timeout",
                             f"The request body did not arrive within {limits.body_timeout:g} s.") from None
    except (OSError, ValueError):  # connection lost, broken chunked framing
        raise RequestTooSlow("incomplete_body", "The request body was cut short.") from None
    if declared is not None and size < declared:
        raise RequestTooSlow("incomplete_body", f"Expected {declared} bytes, received {size}.")
    body = b"".join(parts)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = True
    environ[BODY_DONE] = True


def await_body_start(environ: dict[str, Any], limits: HttpLimits) -> None:
    """Wait (outside any worker slot) until the first byte of a streamed body is there."""
    if environ.get(BODY_DONE):
        return
    inp = environ["eventlet.input"]
    if inp.should_send_hundred_continue:  # the client waits for our go-ahead before it sends anything
        inp.send_hundred_continue_response()
        inp.is_hundred_continue_response_sent = True
    try:
        with eventlet.Timeout(limits.body_timeout):
            inp.rfile.peek(1)
    except eventlet.Timeout:
        raise RequestTooSlow("request_timeout",
                             f"The request body did not start within {limits.body_timeout:g} s.") from None
    except OSError:
        raise RequestTooSlow("incomplete_body", "The connection was lost before the body arrived.") from None


class RateGuardedInput:
    """``wsgi.input`` of a streamed body: each read must complete at the minimum rate (see the module doc).

    A read that is too slow raises ``too_slow()`` (an exception of the caller's choice, so that the handlers' own
    error mapping passes it through as a 408).
    """

    def __init__(self, environ: dict[str, Any], limits: HttpLimits, too_slow: Any, paced: bool = True) -> None:
        self._environ = environ
        self._inp = environ["wsgi.input"]
        self._rate = limits.min_upload_rate
        self._window = limits.min_rate_window
        self._piece = max(1, int(limits.min_upload_rate * limits.min_rate_window))
        self._too_slow = too_slow
        self._paced = paced
        if not paced:  # only silence is bounded: the socket's own timeout, longer than a client's
            self._inp.get_socket().settimeout(limits.stream_idle_timeout)

    def read(self, size: int | None = -1) -> bytes:
        want = self._piece if size is None or size < 0 else min(size, self._piece)
        if not self._paced:
            try:
                data = self._inp.read(want)
            except TimeoutError:
                raise self._too_slow() from None
            self._note_end(data)
            return data
        try:
            with eventlet.Timeout(self._window + want / self._rate):
                data = self._inp.read(want)
        except eventlet.Timeout:
            raise self._too_slow() from None
        self._note_end(data)
        return data

    def _note_end(self, data: bytes) -> None:
        inp = self._inp
        if not data or (not inp.chunked_input and inp.position >= (inp.content_length or 0)):
            self._environ[BODY_DONE] = True

    def readline(self, size: int | None = -1) -> bytes:
        want = self._piece if size is None or size < 0 else min(size, self._piece)
        try:
            with eventlet.Timeout(self._window + want / self._rate):
                data = self._inp.readline(want)
        except eventlet.Timeout:
            raise self._too_slow() from None
        self._note_end(data)
        return data

    def __iter__(self) -> RateGuardedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def guard_stream(environ: dict[str, Any], limits: HttpLimits, too_slow: Any, paced: bool = True) -> None:
    if environ.get(BODY_DONE):
        return
    environ["wsgi.input"] = RateGuardedInput(environ, limits, too_slow, paced)
    environ["wsgi.input_terminated"] = True  # eventlet's input de-chunks and stops at Content-Length itself


def close_unless_body_done(environ: dict[str, Any]) -> None:
    """Answering before the body was read: close the connection rather than drain what may never come."""
    if not environ.get(BODY_DONE) and CLOSE_CONNECTION in environ:
        environ[CLOSE_CONNECTION]()
