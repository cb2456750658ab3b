"""Helpers for nameko ``@http`` entrypoints on Werkzeug 3 (used by the gateway and the storage data plane).

``http`` replaces ``nameko.web.handlers.http``: every error leaves as JSON ``{"error": {"code", "message"}}`` with a
meaningful status instead of nameko's plain-text 400/500 (docs/architecture.md fact 8), and request bodies sent with
``Transfer-Encoding: chunked`` are readable as a stream (see ``_mark_input_terminated``).

Slow clients cannot hold worker slots (``shared.http_server``): a route's body is read whole, with a cap and a
deadline, before its worker starts, unless the route is declared ``stream=True`` (uploads), in which case it waits
for a slot of the stream pool and must keep a minimum rate.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from typing import Any

from nameko.exceptions import BadRequest
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WsgiApp
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from shared import cors, http_server, metrics
from shared.config import load_settings
from shared.http_server import BodyTooLarge, GuardedWebServer, RequestTooSlow, ServerBusy

_log = logging.getLogger(__name__)

JSON_MIMETYPE = "application/json"
MAX_JSON_DEPTH = 32  # request bodies are small objects; deeper nesting is an attack, not data
MAX_DB_INT = 2**63 - 1  # the largest id any database column can hold (BIGINT)
# Liveness: answered by the server's own greenthread, before routing, with no worker slot and no dependency, so it
# fails only when the process itself is stuck (a blocked hub), never because the database or a busy pool is.
LIVENESS_PATH = "/livez"


class ApiError(Exception):
    """An error meant for the HTTP client: its status, a stable machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def _reject_bad_text(value: Any, path: str, depth: int) -> None:
    """Nesting deeper than ``MAX_JSON_DEPTH`` and strings with lone surrogates or NUL characters (which no database
    or UTF-8 encoder takes) are refused, naming where."""
    if depth > MAX_JSON_DEPTH:
        raise ApiError(400, "too_deep", f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels (at {path}).")
    if isinstance(value, str):
        if "\x00" in value:  # PostgreSQL refuses NUL in text: it would be a 500 at the first query
            raise ApiError(400, "invalid_text", f"The string at {path} holds a NUL character (\\u0000), which is "
                                                "not text.")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ApiError(400, "invalid_text", f"The string at {path} holds a lone surrogate "
                                                    f"(\\u{ord(value[exc.start]):04x}), which is not text.") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_bad_text(key, f"{path} (a key)", depth + 1)
            _reject_bad_text(item, f"{path}.{key if key.isascii() and key.isprintable() else '?'}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _reject_bad_text(item, f"{path}[{i}]", depth + 1)


def parse_json(raw: bytes) -> Any:
    """A request body as JSON (``None`` when empty), or a precise 400: ``invalid_encoding`` (not UTF-8),
    ``invalid_json``, ``too_deep``, ``invalid_text`` (a lone surrogate)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding",
                       f"The request body is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 3]!r}).")\
            from None
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ApiError(400, "too_deep", f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
    _reject_bad_text(value, "$", 0)
    return value


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=dict(headers or {}), mimetype=JSON_MIMETYPE)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def _http_exception_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    # Keep headers the exception carries (Allow on 405, WWW-Authenticate on 401...), not its HTML body.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
    return error_response(status, code, exc.description or exc.name or "Error", headers)


def _mark_input_terminated(request: Request) -> None:
    # eventlet.wsgi de-chunks and length-limits its own input but does not set ``wsgi.input_terminated``; Werkzeug 3
    # then hands out an *empty* ``request.stream`` for chunked bodies (no Content-Length), silently dropping uploads.
    environ = request.environ
    if "eventlet.input" in environ and environ.get("wsgi.input") is environ["eventlet.input"]:
        environ.setdefault("wsgi.input_terminated", True)


class JsonWsgiApp(WsgiApp):
    """Routing errors (unknown path 404, wrong method 405) answer in the same JSON shape as handler errors."""

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO") == LIVENESS_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return json_response({"status": "alive"})(environ, start_response)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
            request.path_values = values
            rv = provider.handle_request(request)
        except HTTPException as exc:
            rv = _http_exception_response(exc)
            metrics.HTTP_REQUESTS.labels(environ.get("REQUEST_METHOD", ""), "<unmatched>", str(rv.status_code)).inc()
        http_server.close_unless_body_done(environ)
        return rv(environ, start_response)


class JsonWebServer(GuardedWebServer):
    def get_wsgi_app(self) -> Any:
        # CORS (CORS_ORIGINS) around the whole app, so that error answers carry its headers too.
        return cors.wrap(JsonWsgiApp(self), load_settings().cors_origins)




class HttpEntrypoint(HttpRequestHandler):
    # A distinct shared server class: a container must use either this ``http`` or nameko's, not both
    # (two servers would try to bind WEB_SERVER_ADDRESS).
    server = JsonWebServer()

    def __init__(self, method: str, url: str, expected_exceptions: Any = (), stream: bool = False,
                 paced: bool = True, **kwargs: Any) -> None:
        if not isinstance(expected_exceptions, tuple):
            expected_exceptions = (expected_exceptions,)
        # Client errors are not service faults: keep them out of nameko's error log.
        expected_exceptions = (ApiError, HTTPException, *expected_exceptions)
        self.stream = stream  # the handler reads the body as it arrives (uploads): see shared.http_server
        self.paced = paced  # False: a stream from our own services, bounded by silence only
        super().__init__(method, url, expected_exceptions=expected_exceptions, **kwargs)

    def check_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # nameko binds the call with inspect on every request (a tenth of a task poll's CPU); a route's call is
        # always (request, **its path variables): the handler's parameters are looked up once and compared.
        parameters = self.__dict__.get("_parameters")
        if parameters is None:
            fn = getattr(self.container.service_cls, self.method_name)
            found = list(inspect.signature(fn).parameters.values())[1:]  # after self
            plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in found)
            parameters = self._parameters = (plain, frozenset(p.name for p in found[1:]), len(found))
        plain, names, count = parameters
        if not plain or len(args) != 1 or len(kwargs) != count - 1 or not names.issuperset(kwargs):
            super().check_signature(args, kwargs)  # anything unusual: nameko's own check and its message

    def handle_request(self, request: Request) -> Response:
        response = self._handle(request)
        metrics.HTTP_REQUESTS.labels(request.method, self.url, str(response.status_code)).inc()
        return response

    def _handle(self, request: Request) -> Response:
        # Runs in the connection's greenthread: whatever a slow client makes us wait for here holds no worker slot.
        environ = request.environ
        for value in request.path_values.values():
            # <int:...> matches any digits; an id no database column can hold names nothing (not an overflow).
            if isinstance(value, int) and value > MAX_DB_INT:
                http_server.close_unless_body_done(environ)
                return error_response(404, "not_found", f"Nothing exists at this address (no id is {value}).")
            # %00 in a path names nothing either, and PostgreSQL refuses NUL in text (it was a 500 there)
            if isinstance(value, str) and "\x00" in value:
                http_server.close_unless_body_done(environ)
                return error_response(404, "not_found", "Nothing exists at this address (it holds a NUL character).")
        if "eventlet.input" not in environ:  # not under our server (werkzeug.test): nothing to guard
            _mark_input_terminated(request)
            return super().handle_request(request)
        limits = self.server.limits
        try:
            if not self.stream:
                http_server.buffer_body(environ, limits)
                return super().handle_request(request)
            http_server.await_body_start(environ, limits)
            self.server.acquire_stream_slot(self.paced)
        except RequestTooSlow as exc:
            return error_response(408, exc.code, exc.message)
        except BodyTooLarge as exc:
            return error_response(413, "too_large", str(exc))
        except ServerBusy:
            return error_response(503, "server_busy", "Too many uploads are under way; try again shortly.",
                                  {"Retry-After": "5"})
        try:
            if self.paced:
                too_slow = ApiError(408, "upload_too_slow",
                                    f"The upload is arriving too slowly (under {limits.min_upload_rate} bytes/s).")
            else:
                too_slow = ApiError(408, "upload_stalled",
                                    f"No byte of the upload arrived for {limits.stream_idle_timeout:g} s.")
            http_server.guard_stream(environ, limits, lambda: too_slow, self.paced)
            return super().handle_request(request)
        finally:
            self.server.release_stream_slot()

    def response_from_exception(self, exc: BaseException) -> Response:
        if isinstance(exc, ApiError):
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        if isinstance(exc, HTTPException):
            return _http_exception_response(exc)
        if isinstance(exc, BadRequest):  # the URL's values do not fit the entrypoint's signature
            return error_response(400, "bad_request", "The request does not match this endpoint.")
        if isinstance(exc, self.expected_exceptions):
            return error_response(400, "bad_request", str(exc) or type(exc).__name__)
        # Never leak a stack trace or internals to the client; the log has the details.
        _log.error("unhandled error in %s %s", self.method, self.url, exc_info=exc)
        return error_response(500, "internal_error", "Internal server error.")


http = HttpEntrypoint.decorator
