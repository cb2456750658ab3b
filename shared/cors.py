"""CORS for every HTTP server of the platform (the gateway's API and the storage data plane's download links).

Browser clients (the Open Event frontend) call the API and download archives by XHR from another origin. Off by
default: with ``CORS_ORIGINS`` empty no CORS header is ever sent and preflights get the usual 405. With a list of
origins (``https://app.example.org,http://localhost:4200``), requests from a listed origin get
``Access-Control-Allow-Origin: <that origin>`` with ``Access-Control-Allow-Credentials: true``; other origins get
nothing (the browser then refuses to hand the response to the page). ``*`` in the list allows any origin, answered
``*`` and never with credentials. Responses always carry ``Vary: Origin`` when CORS is on, so caches keep per-origin
answers apart.

One WSGI middleware wraps the whole app, so error answers (401, 404, 410) carry the headers too and a page can read
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ANY = "*"
# What a browser client sends besides the CORS-safelisted headers: the token, JSON bodies, resumed downloads.
ALLOWED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Range", "If-Range", "X-Requested-With", "If-None-Match",
                           "If-Modified-Since")
# What a downloader and an API client read: the file name, size and ranges, the task URL of a 202, a feed's
# validators (schedule apps poll with conditional requests).
EXPOSED_HEADERS = ("Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Location",
                   "Last-Modified")
PREFLIGHT_MAX_AGE = 600

AllowedMethods = Callable[[dict[str, Any]], Iterable[str]]  # environ -> the methods the requested path answers


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` in the form browsers send in ``Origin`` (lower case, no default port, no path);
    a ``ValueError`` naming the value otherwise."""
    raw = value.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"CORS_ORIGINS: {raw!r} is not an origin (scheme://host[:port], http or https, no path)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"CORS_ORIGINS: {raw!r} has an invalid port") from None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def parse_origins(value: str) -> tuple[str, ...]:
    """The comma-separated ``CORS_ORIGINS`` as normalized origins (``*`` kept as is); empty: CORS off."""
    origins: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        origin = ANY if item == ANY else normalize_origin(item)
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


@dataclass(frozen=True)
class CorsPolicy:
    origins: tuple[str, ...]  # normalized, as parse_origins returns them

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    def _allow_origin(self, origin: str | None) -> tuple[str, bool] | None:
        """``(Access-Control-Allow-Origin value, with credentials)`` for ``origin``, or ``None``: not allowed."""
        if not origin or not self.enabled:
            return None
        try:
            normalized = normalize_origin(origin)
        except ValueError:  # "null" (sandboxed pages, cross-origin redirects) and garbage are never listed
            normalized = None
        if normalized is not None and normalized in self.origins:
            return origin, True  # echo exactly what the browser sent
        if ANY in self.origins:
            return ANY, False  # a wildcard never goes with credentials
        return None

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to an actual (non-preflight) response."""
        if not self.enabled:
            return []
        allowed = self._allow_origin(origin)
        if allowed is None:
            return []
        value, credentials = allowed
        headers = [("Access-Control-Allow-Origin", value),
                   ("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))]
        if credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight_headers(self, origin: str | None, methods: Iterable[str]) -> list[tuple[str, str]] | None:
        """Headers of the answer to a preflight from ``origin`` for a path answering ``methods``; ``None``: refused."""
        allowed = self._allow_origin(origin)
        if allowed is None:
            return None
        value, credentials = allowed
        ordered = sorted({m.upper() for m in methods} | {"OPTIONS"})
        headers = [("Access-Control-Allow-Origin", value),
                   ("Access-Control-Allow-Methods", ", ".join(ordered)),
                   ("Access-Control-Allow-Headers", ", ".join(ALLOWED_REQUEST_HEADERS)),
                   ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE))]
        if credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers


def _with_vary_origin(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            if "origin" not in {v.strip().lower() for v in value.split(",")} and value.strip() != "*":
                headers[i] = (name, f"{value}, Origin")
            return headers
    headers.append(("Vary", "Origin"))
    return headers


class CorsMiddleware:
    """Answers preflights for paths the app routes, and adds the CORS headers to every response of ``app``."""

    def __init__(self, app: Callable[..., Any], policy: CorsPolicy, allowed_methods: AllowedMethods) -> None:
        self.app = app
        self.policy = policy
        self.allowed_methods = allowed_methods

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self.policy.enabled:
            return self.app(environ, start_response)
        origin = environ.get("HTTP_ORIGIN")
        if environ.get("REQUEST_METHOD") == "OPTIONS" and origin \
                and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
            methods = set(self.allowed_methods(environ))
            if methods:  # an unknown path falls through to the app's 404
                return self._preflight(origin, methods, start_response)
        extra = self.policy.response_headers(origin)

        def cors_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [h for h in headers if not h[0].lower().startswith("access-control-")]
            return start_response(status, _with_vary_origin(headers + extra), exc_info)

        return self.app(environ, cors_start_response)

    def _preflight(self, origin: str, methods: set[str], start_response: Callable[..., Any]) -> list[bytes]:
        headers = self.policy.preflight_headers(origin, methods)
        if headers is None:
            body = (b'{"error": {"code": "cors_origin_not_allowed", "message": '
                    b'"This origin is not allowed to call this server (CORS_ORIGINS)."}}')
            start_response("403 Forbidden", _with_vary_origin([("Content-Type", "application/json"),
                                                                 ("Content-Length", str(len(body)))]))
            return [body]
        start_response("204 No Content", _with_vary_origin(headers + [("Content-Length", "0")]))
        return [b""]


def url_map_methods(url_map: Any) -> AllowedMethods:
    """The methods a Werkzeug ``Map`` routes for the request's path (empty for an unknown path)."""

    def allowed(environ: dict[str, Any]) -> Iterable[str]:
        return url_map.bind_to_environ(environ).allowed_methods()

    return allowed


def wrap(app: Any, origins: tuple[str, ...]) -> Any:
    """``app`` (a nameko ``WsgiApp``, which has ``url_map``) behind CORS for ``origins``; ``app`` itself if none."""
    if not origins:
        return app
    return CorsMiddleware(app, CorsPolicy(origins), url_map_methods(app.url_map))
