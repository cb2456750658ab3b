"""One guarded fetcher for media URLs found in event data.

Event data is untrusted: a speaker photo URL may point at the cloud metadata service, an internal admin page or a
file on disk. Every fetch therefore goes through :class:`MediaFetcher`, which

* accepts only ``http``/``https`` URLs without embedded credentials;
* resolves the host once, refuses non-public addresses (loopback, private, link-local, multicast, reserved,
  unspecified, and IPv6 forms embedding such IPv4 addresses) unless the host, ``host:port`` or an IP/CIDR is
  allow-listed, and then connects to exactly the address it validated, so a DNS answer that changes between check and
  connect (rebinding) cannot redirect the request. For https the TLS handshake still sends SNI for, and verifies the
  certificate against, the URL's hostname;
* follows redirects itself, re-validating every hop;
* bounds connect and read waits and the whole fetch (an overall deadline, which a caller may shorten), the response
  size (by Content-Length and while streaming), and refuses non-2xx answers;
* judges the body by its first bytes (``shared.media_types``): HTML, XML and JSON are never media, and with a
  ``kind`` the content must be an image, document, audio or video format (SVG and script-bearing files are not
  images). ``FetchedMedia.extension`` then gives the detected format's extension.

It uses urllib3 directly (no proxies, no environment, no cookies), which works under eventlet monkey patching.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from http.client import HTTPException
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from urllib3 import HTTPConnectionPool, HTTPResponse
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Timeout

from shared.address_guard import (
    AddressGuard,
    IPAddress,
    Resolver,
    Target,
    UrlRefused,
    hard_deadline,
    parse_target,
    pinned_pool,
)
from shared.media_types import SNIFF_BYTES, extension_for, is_never_media, sniff

if TYPE_CHECKING:
    from shared.config import Settings

__all__ = ["DEFAULT_MAX_BYTES", "FetchedMedia", "MediaFetchError", "MediaFetcher", "extension_of"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Error pages saved as "media" were the reference server's failure mode: never accept documents as media.
REFUSED_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml",
                                   "application/json"})
DEFAULT_CONTENT_TYPE = "application/octet-stream"
USER_AGENT = "event-portability-media-fetcher/1"
_EXTENSION_RE = re.compile(r"\.[a-z0-9]{1,8}")
_POOL_REPR_RE = re.compile(r"HTTPS?Connection(?:Pool)?\(host=[^)]*\):\s*")
_log = logging.getLogger(__name__)


class MediaFetchError(UrlRefused):
    """A media URL could not be fetched; ``code`` is a short machine-readable reason.

    Codes: ``bad_url``, ``scheme_not_allowed``, ``address_not_allowed``, ``connection_failed``, ``tls_error``,
    ``timeout``, ``too_many_redirects``, ``http_error``, ``bad_content_type``, ``too_large``.
    """


def extension_of(url: str) -> str:
    """The lowercase extension of the URL path's last segment (``".jpg"``), or ``""`` if it has no plausible one.

    Only short alphanumeric extensions count, so ``/talk.final version`` or ``/a.b-c`` give ``""``; the query string
    and fragment are ignored.
    """
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return ""
    name = posixpath.basename(unquote(path))
    _, ext = posixpath.splitext(name)
    ext = ext.lower()
    return ext if _EXTENSION_RE.fullmatch(ext) else ""


def _hard_deadline(seconds: float, url: str) -> AbstractContextManager[None]:
    return hard_deadline(seconds, lambda: MediaFetchError("media fetch exceeded its overall deadline", "timeout", url))


def _as_fetch_error(exc: UrlRefused) -> MediaFetchError:
    """The guard's refusal as this module's error (callers catch MediaFetchError only)."""
    return exc if isinstance(exc, MediaFetchError) else MediaFetchError(exc.message, exc.code, exc.url, exc.status)


def _parse_target(url: str) -> Target:
    try:
        return parse_target(url, "media URL")
    except UrlRefused as exc:
        raise _as_fetch_error(exc) from None



def _reason(exc: BaseException) -> str:
    # urllib3 names the pool it failed in, and our pools are keyed by the validated IP: never show it (messages end
    # up in export warnings that organizers read).
    return _POOL_REPR_RE.sub("", str(exc)) or type(exc).__name__


def _translate(exc: BaseException, url: str) -> MediaFetchError:
    """Map urllib3/socket failures to MediaFetchError codes."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, SSLError):
        return MediaFetchError(f"TLS failure: {_reason(exc)}", "tls_error", url)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, NewConnectionError):
        return MediaFetchError(f"connection failed: {_reason(exc)}", "connection_failed", url)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return MediaFetchError(f"timed out: {_reason(exc)}", "timeout", url)
    if isinstance(exc, DecodeError):
        return MediaFetchError(f"undecodable response body: {_reason(exc)}", "connection_failed", url)
    return MediaFetchError(f"connection failed: {_reason(exc)}", "connection_failed", url)


class FetchedMedia:
    """An open media response. Use as a context manager; read it once with :meth:`iter_chunks`."""

    def __init__(
        self,
        response: HTTPResponse,
        pool: HTTPConnectionPool,
        *,
        final_url: str,
        content_type: str,
        content_length: int | None,
        max_bytes: int,
        read_timeout: float,
        deadline: float,
        kind: str | None = None,
    ) -> None:
        self._response = response
        self._pool = pool
        self.final_url = final_url
        self.content_type = content_type
        self.content_length = content_length
        self._max_bytes = max_bytes
        self._read_timeout = read_timeout
        self._deadline = deadline
        self.kind = kind
        self.extension = ""  # of the detected format (".jpg"), known once the first chunk has been yielded
        self._consumed = False
        self._closed = False

    def __enter__(self) -> FetchedMedia:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (never drained: the rest of a refused body is not worth reading)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._response.close()
        finally:
            self._pool.close()

    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]:
        """Yield the body in chunks of at most ``chunk_size`` bytes, enforcing the size cap and the deadline.

        Raises MediaFetchError (``too_large``, ``timeout``, ``bad_content_type``, ``connection_failed``) mid-stream;
        the response is closed on error or when the body is exhausted.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if self._consumed or self._closed:
            raise RuntimeError("the media body can only be read once")
        self._consumed = True
        received = 0
        head = bytearray()
        sniffed = False
        try:
            while True:
                chunk = self._read(chunk_size)
                if not chunk:
                    break
                received += len(chunk)
                if received > self._max_bytes:
                    raise MediaFetchError(
                        f"media body exceeds the {self._max_bytes}-byte limit", "too_large", self.final_url
                    )
                if not sniffed:
                    # Hold back the first bytes until there are enough to judge the content.
                    head += chunk
                    if len(head) < SNIFF_BYTES:
                        continue
                    self._sniff(head)
                    sniffed = True
                    yield from _split(bytes(head), chunk_size)
                    head.clear()
                else:
                    yield chunk
                # Let other greenthreads (AMQP heartbeats) run between chunks even when data arrives fast.
                time.sleep(0)
            if not sniffed and head:
                self._sniff(head)
                yield from _split(bytes(head), chunk_size)
        finally:
            self.close()

    def _read(self, amount: int) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise MediaFetchError("media fetch exceeded its overall deadline", "timeout", self.final_url)
        # read1 returns after one recv, so each wait is bounded by min(read timeout, time left).
        sock = getattr(self._response.connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(self._read_timeout, remaining))
        with _hard_deadline(remaining, self.final_url):
            try:
                return self._response.read1(amount)
            except (HTTPError, HTTPException, OSError) as exc:
                raise _translate(exc, self.final_url) from exc

    def _sniff(self, head: bytes | bytearray) -> None:
        start = bytes(head[:SNIFF_BYTES])
        reason = is_never_media(start) if self.kind is None else sniff(start, self.kind)
        if reason is not None:
            raise MediaFetchError(f"response declared {self.content_type} but contains {reason}",
                                  "bad_content_type", self.final_url)
        self.extension = extension_for(start, self.kind)


def _split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class MediaFetcher:
    """Fetch media URLs from untrusted event data safely.

    ``allow_hosts`` lists destinations that may be non-public: a hostname (``storage.internal``), ``host:port``
    (``127.0.0.1:8001``, ``[::1]:8001``), an IP or a CIDR (``10.0.0.0/8``). Public addresses are always allowed.
    ``timeout`` bounds each connect and each read; ``total_timeout`` (default ``6 * timeout``) bounds the whole fetch,
    redirects and body included. ``resolver(host, port) -> addresses`` replaces ``socket.getaddrinfo``; ``ca_certs``
    replaces the system trust store for https.
    """

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 20,
        max_redirects: int = 3,
        *,
        total_timeout: float | None = None,
        resolver: Resolver | None = None,
        ca_certs: str | None = None,
    ) -> None:
        if max_bytes <= 0 or timeout <= 0 or max_redirects < 0:
            raise ValueError("max_bytes and timeout must be positive, max_redirects non-negative")
        self.guard = AddressGuard(allow_hosts, resolver=resolver, what="media URL")
        self.allow_rules = self.guard.allow_rules
        self.max_bytes = max_bytes
        self.timeout = float(timeout)
        self.total_timeout = float(total_timeout) if total_timeout is not None else 6 * self.timeout
        self.max_redirects = max_redirects
        self._ca_certs = ca_certs

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaFetcher:
        """Build from the media_allow_hosts, media_max_bytes and media_timeout settings."""
        return cls(
            allow_hosts=settings.media_allow_hosts, max_bytes=settings.media_max_bytes, timeout=settings.media_timeout
        )

    def open(self, url: str, *, kind: str | None = None, deadline: float | None = None) -> FetchedMedia:
        """Open ``url`` (following up to ``max_redirects`` validated redirects) and return the streaming response.

        ``kind`` (image, document, audio, video): the body must be media of that kind, else ``bad_content_type``
        while reading. ``deadline`` (``time.monotonic()`` seconds) ends the fetch earlier than ``total_timeout``
        would (an export's media deadline). Raises MediaFetchError; nothing is sent to a destination that failed
        validation.
        """
        own = time.monotonic() + self.total_timeout
        deadline = own if deadline is None else min(own, deadline)
        if deadline <= time.monotonic():
            raise MediaFetchError("media fetch exceeded its overall deadline", "timeout", url)
        current = url
        for _hop in range(self.max_redirects + 1):
            target = _parse_target(current)
            addresses = self._validated_addresses(target, deadline)
            response, pool = self._request(target, addresses, deadline)
            status = response.status
            if status in REDIRECT_STATUSES:
                location = response.headers.get("Location", "").strip()
                _discard(response, pool)
                if not location:
                    raise MediaFetchError(f"HTTP {status} without a Location", "http_error", target.url, status)
                current = urljoin(target.url, location)
                continue
            try:
                return self._accept(target, response, pool, deadline, kind)
            except BaseException:
                _discard(response, pool)
                raise
        raise MediaFetchError(f"more than {self.max_redirects} redirects", "too_many_redirects", current)

    def is_allowed_address(self, host: str, port: int, ip: IPAddress) -> bool:
        """Whether connecting to ``ip`` for ``host:port`` is permitted (public, or allow-listed)."""
        return self.guard.is_allowed_address(host, port, ip)

    def _validated_addresses(self, target: Target, deadline: float) -> list[IPAddress]:
        try:
            return self.guard.validated_addresses(target, deadline - time.monotonic())
        except UrlRefused as exc:
            raise _as_fetch_error(exc) from None

    def _pool(self, target: Target, ip: IPAddress) -> HTTPConnectionPool:
        return pinned_pool(target, ip, self._ca_certs)

    def _request(
        self, target: Target, addresses: list[IPAddress], deadline: float
    ) -> tuple[HTTPResponse, HTTPConnectionPool]:
        headers = {
            "Host": target.host_header,
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            # Ask for the bytes as stored; if a server compresses anyway, urllib3 decodes and the cap counts decoded
            # bytes.
            "Accept-Encoding": "identity",
            "Connection": "close",
        }
        last_error: MediaFetchError | None = None
        for ip in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(self.timeout, remaining)
            pool = self._pool(target, ip)
            try:
                with _hard_deadline(remaining, target.url):
                    response = pool.urlopen(
                        "GET",
                        target.request_path,
                        headers=headers,
                        redirect=False,
                        retries=False,
                        assert_same_host=False,
                        preload_content=False,
                        decode_content=True,
                        timeout=Timeout(connect=wait, read=wait),
                    )
            except NewConnectionError as exc:
                # Refused or unreachable: try the next validated address, like socket.create_connection does.
                pool.close()
                last_error = _translate(exc, target.url)
                continue
            except (HTTPError, HTTPException, OSError) as exc:
                pool.close()
                raise _translate(exc, target.url) from exc
            except BaseException:
                pool.close()
                raise
            return response, pool
        if last_error is not None:
            raise last_error
        raise MediaFetchError("media fetch exceeded its overall deadline", "timeout", target.url)

    def _accept(
        self, target: Target, response: HTTPResponse, pool: HTTPConnectionPool, deadline: float, kind: str | None
    ) -> FetchedMedia:
        status = response.status
        if not 200 <= status < 300:
            raise MediaFetchError(f"HTTP {status} from {target.url}", "http_error", target.url, status)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type in REFUSED_CONTENT_TYPES:
            raise MediaFetchError(f"refusing {media_type} response as media", "bad_content_type", target.url)
        content_length: int | None = None
        length_text = response.headers.get("Content-Length")
        if length_text is not None:
            try:
                content_length = int(length_text.strip())
            except ValueError:
                raise MediaFetchError(f"invalid Content-Length {length_text!r}", "http_error", target.url) from None
            if content_length > self.max_bytes:
                raise MediaFetchError(
                    f"media of {content_length} bytes exceeds the {self.max_bytes}-byte limit", "too_large", target.url
                )
        return FetchedMedia(
            response,
            pool,
            final_url=target.url,
            content_type=media_type or DEFAULT_CONTENT_TYPE,
            content_length=content_length,
            max_bytes=self.max_bytes,
            read_timeout=self.timeout,
            deadline=deadline,
            kind=kind,
        )


def _discard(response: HTTPResponse, pool: HTTPConnectionPool) -> None:
    try:
        response.close()
    finally:
        pool.close()
