"""The one guard for outgoing requests to URLs that users give us (media URLs in event data, webhook targets).

A URL is accepted only if it is ``http``/``https`` without embedded credentials, and every address its host resolves
to is public (not loopback, private, link-local, multicast, reserved, unspecified, nor an IPv6 form embedding such an
IPv4 address) unless the host, ``host:port`` or an IP/CIDR is allow-listed (``MEDIA_ALLOW_HOSTS``,
``WEBHOOK_ALLOW_HOSTS``: comma separated). Callers then connect to exactly the addresses validated here
(``pinned_pool``), so a DNS answer that changes between check and connect (rebinding) cannot redirect the request.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["AddressGuard", "Target", "UrlRefused", "hard_deadline", "parse_target", "pinned_pool"]

ALLOWED_SCHEMES = frozenset({"http", "https"})
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Iterable[str]]


class UrlRefused(Exception):
    """A URL the guard will not send anything to; ``code`` is a short machine-readable reason.

    Codes: ``bad_url``, ``scheme_not_allowed``, ``address_not_allowed``, ``connection_failed`` (cannot resolve),
    ``timeout``; subclasses (``shared.media_fetcher.MediaFetchError``) add their own.
    """

    def __init__(self, message: str, code: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.url = url
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


def is_public(ip: IPAddress) -> bool:
    """True if ``ip`` is a globally routable unicast address, looking through IPv6 forms that embed IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # The kernel sends ::ffff:a.b.c.d to a.b.c.d: judge the IPv4 address.
            return is_public(ip.ipv4_mapped)
        embedded: list[IPAddress] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64_PREFIX:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(not is_public(inner) for inner in embedded):
            return False
        if ip.is_site_local:
            return False
    # is_global alone misses some multicast ranges; the explicit checks document intent.
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def ascii_host(host: str) -> str:
    """Lowercase A-label form of a hostname (IP literals unchanged); raises UnicodeError if it has none."""
    if ip_literal(host) is not None:
        return host
    return host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()


@dataclass(frozen=True)
class AllowRule:
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


def parse_allow_entry(entry: str) -> AllowRule:
    """One allow-list entry: a hostname, ``host:port``, ``[v6]:port``, an IP or a CIDR; ValueError otherwise."""
    text = entry.strip().lower()
    port: int | None = None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if bracketed:
        text, port_text = bracketed.group(1), bracketed.group(2)
        port = int(port_text) if port_text else None
    elif text.count(":") == 1:
        text, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"invalid allow-list entry {entry!r}")
        port = int(port_text)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"invalid port in allow-list entry {entry!r}")
    try:
        return AllowRule(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    host = text.rstrip(".")
    if not host or "/" in host or ":" in host:
        raise ValueError(f"invalid allow-list entry {entry!r}")
    try:
        return AllowRule(host=ascii_host(host), port=port)
    except UnicodeError:
        raise ValueError(f"invalid hostname in allow-list entry {entry!r}") from None


def parse_allow_list(entries: Iterable[str]) -> tuple[AllowRule, ...]:
    return tuple(parse_allow_entry(entry) for entry in entries if entry.strip())


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # A-label hostname or bare IP literal (no brackets)
    port: int
    request_path: str
    host_header: str


def parse_target(url: str, what: str = "media URL") -> Target:
    """The parts of an http(s) URL we may request; ``what`` names it in messages ("webhook URL")."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused(f"empty or non-string {what}", "bad_url", None)
    url = url.strip()
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise UrlRefused(f"scheme {scheme or '(none)'!r} is not allowed for {what}s", "scheme_not_allowed", url)
        explicit_port = parts.port
        raw_host = parts.hostname
    except ValueError as exc:
        raise UrlRefused(f"malformed {what}: {exc}", "bad_url", url) from None
    if parts.username is not None or parts.password is not None:
        # Refuse rather than strip: credentials in user data must not be sent anywhere, nor silently dropped.
        raise UrlRefused(f"{what}s must not carry credentials", "bad_url", url)
    if not raw_host:
        raise UrlRefused(f"{what} has no host", "bad_url", url)
    try:
        host = ascii_host(raw_host)
    except UnicodeError:
        raise UrlRefused(f"invalid hostname {raw_host!r}", "bad_url", url) from None
    default_port = 443 if scheme == "https" else 80
    port = explicit_port if explicit_port is not None else default_port
    if port == 0:
        raise UrlRefused("port 0 is not a valid destination", "bad_url", url)
    # Keep existing %-escapes, escape anything http.client would reject (spaces, non-ASCII).
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    literal = ip_literal(host)
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    return Target(url=url, scheme=scheme, host=host, port=port, request_path=path, host_header=host_header)


def _green_timeout_class() -> Any:
    """eventlet.Timeout when sockets are green (nameko services, the test suite), else None."""
    eventlet = sys.modules.get("eventlet")
    if eventlet is None:
        return None
    from eventlet import patcher

    return eventlet.Timeout if patcher.is_monkey_patched("socket") else None


@contextmanager
def hard_deadline(seconds: float, error: Callable[[], Exception]) -> Iterator[None]:
    """Bound a blocking step by wall-clock time under eventlet, raising ``error()`` when it runs out.

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
        raise error() from None
    finally:
        timer.cancel()


class AddressGuard:
    """Which destinations may be requested: public addresses always, non-public ones only when allow-listed.

    ``resolver(host, port) -> addresses`` replaces ``socket.getaddrinfo`` (tests).
    """

    def __init__(self, allow_hosts: Iterable[str] = (), *, resolver: Resolver | None = None,
                 what: str = "media URL") -> None:
        self.allow_rules = parse_allow_list(allow_hosts)
        self.what = what
        self._resolver = resolver

    def is_allowed_address(self, host: str, port: int, ip: IPAddress) -> bool:
        """Whether connecting to ``ip`` for ``host:port`` is permitted (public, or allow-listed)."""
        return is_public(ip) or any(rule.matches(host, port, ip) for rule in self.allow_rules)

    def check(self, url: str, timeout: float = 10.0) -> tuple[Target, list[IPAddress]]:
        """The URL's parts and the validated addresses to connect to; UrlRefused otherwise."""
        target = parse_target(url, self.what)
        return target, self.validated_addresses(target, timeout)

    def validated_addresses(self, target: Target, timeout: float) -> list[IPAddress]:
        addresses = self.resolve(target, timeout)
        for ip in addresses:
            # Refuse if any answer is non-public: a name mixing public and internal answers is suspect.
            if not self.is_allowed_address(target.host, target.port, ip):
                # What a name resolves to inside our network is for operators, not for the user who reads the message.
                _log.info("%s refused: %s resolves to %s (not public, not allow-listed)", self.what, target.host, ip)
                raise UrlRefused(
                    f"the host resolves to a private address; {self.what}s must point at public addresses",
                    "address_not_allowed", target.url,
                )
        return addresses

    def resolve(self, target: Target, timeout: float) -> list[IPAddress]:
        literal = ip_literal(target.host)
        if literal is not None:
            return [literal]
        try:
            with hard_deadline(timeout, lambda: UrlRefused(f"resolving {target.host} timed out", "timeout",
                                                           target.url)):
                if self._resolver is not None:
                    raw = [str(address) for address in self._resolver(target.host, target.port)]
                else:
                    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
                    raw = [str(info[4][0]) for info in infos]
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"cannot resolve {target.host}: {exc}", "connection_failed", target.url) from exc
        addresses: list[IPAddress] = []
        for text in raw:
            ip = ip_literal(text.split("%", 1)[0])
            if ip is None:
                raise UrlRefused(f"resolver returned {text!r} for {target.host}", "connection_failed", target.url)
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise UrlRefused(f"{target.host} has no addresses", "connection_failed", target.url)
        return addresses


def pinned_pool(target: Target, ip: IPAddress, ca_certs: str | None = None) -> HTTPConnectionPool:
    """A one-connection urllib3 pool to the validated ``ip``: urllib3 connects to it without resolving again."""
    if target.scheme == "https":
        # server_hostname drives both SNI and OpenSSL's hostname check, so the certificate must match the URL's
        # hostname even though the socket goes to a bare IP.
        return HTTPSConnectionPool(str(ip), target.port, maxsize=1, retries=False, cert_reqs="CERT_REQUIRED",
                                   ca_certs=ca_certs, server_hostname=target.host)
    return HTTPConnectionPool(str(ip), target.port, maxsize=1, retries=False)
