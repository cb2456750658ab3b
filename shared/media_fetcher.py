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

import ipaddress
import logging
import posixpath
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from urllib3 import HTTPConnectionPool, HTTPResponse, HTTPSConnectionPool
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

from shared.media_types import SNIFF_BYTES, extension_for, is_never_media, sniff

if TYPE_CHECKING:
    from shared.config import Settings

__all__ = ["DEFAULT_MAX_BYTES", "FetchedMedia", "MediaFetchError", "MediaFetcher", "extension_of"]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Error pages saved as "media" were the reference server's failure mode: never accept documents as media.
REFUSED_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml",
                                   "application/json"})
DEFAULT_CONTENT_TYPE = "application/octet-stream"
USER_AGENT = "event-portability-media-fetcher/1"
_EXTENSION_RE = re.compile(r"\.[a-z0-9]{1,8}")
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_POOL_REPR_RE = re.compile(r"HTTPS?Connection(?:Pool)?\(host=[^)]*\):\s*")
_log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]


class MediaFetchError(Exception):
    """A media URL could not be fetched; ``code`` is a short machine-readable reason.

    Codes: ``bad_url``, ``scheme_not_allowed``, ``address_not_allowed``, ``connection_failed``, ``tls_error``,
    ``timeout``, ``too_many_redirects``, ``http_error``, ``bad_content_type``, ``too_large``.
    """

    def __init__(self, message: str, code: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.url = url
        self.status = status

    def __repr__(self) -> str:
        return f"MediaFetchError({self.message!r}, code={self.code!r})"


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


def _is_public(ip: IPAddress) -> bool:
    """True if ``ip`` is a globally routable unicast address, looking through IPv6 forms that embed IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # The kernel sends ::ffff:a.b.c.d to a.b.c.d: judge the IPv4 address.
            return _is_public(ip.ipv4_mapped)
        embedded: list[IPAddress] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64_PREFIX:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(not _is_public(inner) for inner in embedded):
            return False
        if ip.is_site_local:
            return False
    # is_global alone misses some multicast ranges; the explicit checks document intent.
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _ascii_host(host: str) -> str:
    """Lowercase A-label form of a hostname (IP literals unchanged); raises UnicodeError if it has none."""
    if _ip_literal(host) is not None:
        return host
    return host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()


@dataclass(frozen=True)
class _AllowRule:
    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    def matches(self, host: str, port: int, ip: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            # Compare IPv4-mapped addresses as the IPv4 address they reach.
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return ip.version == self.network.version and ip in self.network
        return self.host == host.rstrip(".")


def _parse_allow_entry(entry: str) -> _AllowRule:
    text = entry.strip().lower()
    port: int | None = None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if bracketed:
        text, port_text = bracketed.group(1), bracketed.group(2)
        port = int(port_text) if port_text else None
    elif text.count(":") == 1:
        text, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"invalid media allow-list entry {entry!r}")
        port = int(port_text)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"invalid port in media allow-list entry {entry!r}")
    try:
        return _AllowRule(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    host = text.rstrip(".")
    if not host or "/" in host or ":" in host:
        raise ValueError(f"invalid media allow-list entry {entry!r}")
    try:
        return _AllowRule(host=_ascii_host(host), port=port)
    except UnicodeError:
        raise ValueError(f"invalid hostname in media allow-list entry {entry!r}") from None


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # A-label hostname or bare IP literal (no brackets)
    port: int
    request_path: str
    host_header: str


def _parse_target(url: str) -> _Target:
    if not isinstance(url, str) or not url.strip():
        raise MediaFetchError("empty or non-string media URL", "bad_url", None)
    url = url.strip()
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise MediaFetchError(
                f"scheme {scheme or '(none)'!r} is not allowed for media URLs", "scheme_not_allowed", url
            )
        explicit_port = parts.port
        raw_host = parts.hostname
    except ValueError as exc:
        raise MediaFetchError(f"malformed media URL: {exc}", "bad_url", url) from None
    if parts.username is not None or parts.password is not None:
        # Refuse rather than strip: credentials in event data must not be sent anywhere, nor silently dropped.
        raise MediaFetchError("media URLs must not carry credentials", "bad_url", url)
    if not raw_host:
        raise MediaFetchError("media URL has no host", "bad_url", url)
    try:
        host = _ascii_host(raw_host)
    except UnicodeError:
        raise MediaFetchError(f"invalid hostname {raw_host!r}", "bad_url", url) from None
    default_port = 443 if scheme == "https" else 80
    port = explicit_port if explicit_port is not None else default_port
    if port == 0:
        raise MediaFetchError("port 0 is not a valid destination", "bad_url", url)
    # Keep existing %-escapes, escape anything http.client would reject (spaces, non-ASCII).
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    literal = _ip_literal(host)
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    return _Target(url=url, scheme=scheme, host=host, port=port, request_path=path, host_header=host_header)


def _green_timeout_class() -> Any:
    """eventlet.Timeout when sockets are green (nameko services, the test suite), else None."""
    eventlet = sys.modules.get("eventlet")
    if eventlet is None:
        return None
    from eventlet import patcher

    return eventlet.Timeout if patcher.is_monkey_patched("socket") else None


@contextmanager
def _hard_deadline(seconds: float, url: str) -> Iterator[None]:
    """Bound a blocking step by wall-clock time under eventlet.

    Socket timeouts bound each recv, not a peer that trickles one byte per recv (headers included); a green timeout
    does. Without eventlet, the per-recv bounds set by the callers are the best available.
    """
    timeout_class = _green_timeout_class()
    if timeout_class is None:
        yield
        return
    timer = timeout_class(max(seconds, 0.001))
    try:
        yield
    except timeout_class as exc:
        if exc is not timer:
            raise
        raise MediaFetchError("media fetch exceeded its overall deadline", "timeout", url) from None
    finally:
        timer.cancel()


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
        self.allow_rules = tuple(_parse_allow_entry(entry) for entry in allow_hosts if entry.strip())
        self.max_bytes = max_bytes
        self.timeout = float(timeout)
        self.total_timeout = float(total_timeout) if total_timeout is not None else 6 * self.timeout
        self.max_redirects = max_redirects
        self._resolver = resolver
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
        return _is_public(ip) or any(rule.matches(host, port, ip) for rule in self.allow_rules)

    def _validated_addresses(self, target: _Target, deadline: float) -> list[IPAddress]:
        addresses = self._resolve(target, deadline)
        for ip in addresses:
            # Refuse if any answer is non-public: a name mixing public and internal answers is suspect.
            if not self.is_allowed_address(target.host, target.port, ip):
                # What a name resolves to inside our network is for operators, not for the organizer who sees the
                # message in the export's warnings.
                _log.info("media fetch refused: %s resolves to %s (not public, not allow-listed)", target.host, ip)
                raise MediaFetchError(
                    "the host resolves to a private address; media are only fetched from public addresses",
                    "address_not_allowed",
                    target.url,
                )
        return addresses

    def _resolve(self, target: _Target, deadline: float) -> list[IPAddress]:
        literal = _ip_literal(target.host)
        if literal is not None:
            return [literal]
        try:
            with _hard_deadline(deadline - time.monotonic(), target.url):
                if self._resolver is not None:
                    raw = [str(address) for address in self._resolver(target.host, target.port)]
                else:
                    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
                    raw = [str(info[4][0]) for info in infos]
        except (OSError, UnicodeError) as exc:
            raise MediaFetchError(f"cannot resolve {target.host}: {exc}", "connection_failed", target.url) from exc
        addresses: list[IPAddress] = []
        for text in raw:
            ip = _ip_literal(text.split("%", 1)[0])
            if ip is None:
                raise MediaFetchError(f"resolver returned {text!r} for {target.host}", "connection_failed", target.url)
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise MediaFetchError(f"{target.host} has no addresses", "connection_failed", target.url)
        return addresses

    def _pool(self, target: _Target, ip: IPAddress) -> HTTPConnectionPool:
        # The pool's host is the validated IP: urllib3 connects to it without resolving anything again.
        if target.scheme == "https":
            # server_hostname drives both SNI and OpenSSL's hostname check, so the certificate must match the
            # URL's hostname even though the socket goes to a bare IP.
            return HTTPSConnectionPool(
                str(ip),
                target.port,
                maxsize=1,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=self._ca_certs,
                server_hostname=target.host,
            )
        return HTTPConnectionPool(str(ip), target.port, maxsize=1, retries=False)

    def _request(
        self, target: _Target, addresses: list[IPAddress], deadline: float
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
        self, target: _Target, response: HTTPResponse, pool: HTTPConnectionPool, deadline: float, kind: str | None
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
