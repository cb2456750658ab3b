"""One delivery attempt over HTTP: the target checked again by the address guard, one POST, the answer judged.

DNS may have changed since the endpoint was registered, so every attempt resolves and validates again and connects to
exactly the validated address. Redirects are never followed (a 3xx is a failed attempt), each of connect and read
waits at most ``timeout``, the whole attempt ``attempt_seconds``, and at most ``max_response_bytes`` of the answer are
read (it is only looked at for the error message).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.client import HTTPException

from urllib3 import BaseHTTPResponse
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Timeout

from shared.address_guard import AddressGuard, UrlRefused, hard_deadline, pinned_pool

USER_AGENT = "event-portability-webhooks/1"
ERROR_SNIPPET = 200  # characters of a refusing receiver's answer kept in last_error


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, None when no answer came
    error: str | None  # None: delivered (2xx)

    @property
    def delivered(self) -> bool:
        return self.error is None


class _AttemptTimeout(Exception):
    pass


def _why(exc: BaseException) -> str:
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, Urllib3Timeout | ReadTimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, SSLError):
        return "TLS failure"
    if isinstance(exc, NewConnectionError):
        return "connection failed"
    return f"connection failed ({type(exc).__name__})"


def post(guard: AddressGuard, url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         attempt_seconds: float, max_response_bytes: int) -> Outcome:
    """POST ``body`` to ``url``; never raises for anything the network or the receiver does."""
    deadline = time.monotonic() + attempt_seconds
    try:
        with hard_deadline(attempt_seconds, _AttemptTimeout):
            target, addresses = guard.check(url, timeout)
            last = "connection failed"
            for ip in addresses:
                pool = pinned_pool(target, ip)
                wait = max(min(timeout, deadline - time.monotonic()), 0.001)
                try:
                    response = pool.urlopen(
                        "POST", target.request_path, body=body,
                        headers={**headers, "Host": target.host_header, "User-Agent": USER_AGENT,
                                 "Content-Length": str(len(body)), "Connection": "close"},
                        redirect=False, retries=False, assert_same_host=False, preload_content=False,
                        timeout=Timeout(connect=wait, read=wait),
                    )
                except NewConnectionError as exc:  # refused or unreachable: the next validated address
                    pool.close()
                    last = _why(exc)
                    continue
                except BaseException:  # no answer (timeout, reset, our deadline): nothing is left open
                    pool.close()
                    raise
                try:
                    return _judge(response, max_response_bytes)
                finally:
                    response.close()
                    pool.close()
            return Outcome(None, last)
    except UrlRefused as exc:
        return Outcome(None, f"refused by the address guard: {exc.message}")
    except _AttemptTimeout:
        return Outcome(None, f"timed out (no answer within {attempt_seconds:g} s)")
    except (HTTPError, HTTPException, OSError) as exc:
        return Outcome(None, _why(exc))


def _head(response: BaseHTTPResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the answer (the rest is never read: the connection is closed)."""
    data = b""
    try:
        while len(data) < limit:
            chunk = response.read1(min(65536, limit - len(data)))
            if not chunk:
                break
            data += chunk
    except (HTTPError, HTTPException, OSError):
        pass  # the status is the answer; a body cut short only shortens the message
    return data


def _judge(response: BaseHTTPResponse, limit: int) -> Outcome:
    """2xx is delivered as soon as the status line came (its body is not waited for)."""
    status = response.status
    if 200 <= status < 300:
        return Outcome(status, None)
    if 300 <= status < 400:
        return Outcome(status, f"HTTP {status}: redirects are not followed")
    text = _head(response, limit)[:ERROR_SNIPPET * 4].decode("utf-8", "replace").strip()[:ERROR_SNIPPET]
    return Outcome(status, f"HTTP {status}" + (f": {text}" if text else ""))
