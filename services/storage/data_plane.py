"""The storage HTTP data plane as plain functions over a backend and a Werkzeug request (no nameko, no broker).

``service.py`` wires these to ``@http`` entrypoints; tests can call them with ``werkzeug.test`` requests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar
from urllib.parse import quote

from werkzeug.http import http_date
from werkzeug.wrappers import Request, Response

from services.storage.backends.base import ObjectBackend
from services.storage.types import (
    CHUNK_SIZE,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    content_disposition,
    validate_key,
)
from shared import object_batch
from shared.http import ApiError, json_response
from shared.object_keys import is_key_prefix
from shared.signing import BadSignature, LinkExpired, signed_query, verify_query

T = TypeVar("T")
SIGNABLE_METHODS = ("GET", "PUT")
BATCH_METHOD = object_batch.SIGN_METHOD  # signed for a key prefix: never valid for one object
# "bytes=-0" is a valid suffix range of zero bytes (RFC 9110 14.1.1), never satisfiable; Werkzeug parses it as no range.
_ZERO_SUFFIX = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*", re.IGNORECASE)
# Query parameters a link may carry besides expires/filename, covered by its signature (see services/storage/objects).
SIGNED_EXTRA = ("backend", "retention", "owner", "keep")

LINK_EXPIRED_MESSAGE = "This link has expired. Request a new download link."
INVALID_SIGNATURE_MESSAGE = (
    "This link is invalid: its signature does not match (it may have been altered or cut short). Request a new link."
)


def _backend_failure(exc: StorageError) -> ApiError:
    # BackendError messages name backend, operation and key, never credentials or signed URLs (backends/README.md).
    return ApiError(502, "backend_error", f"The storage backend failed: {exc}")


def signed_url(
    base_url: str,
    secret: str | bytes,
    key: str,
    method: str = "GET",
    ttl: int = 3600,
    filename: str | None = None,
    now: float | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Absolute ``<base_url>/objects/<key>?expires=..[&filename=..][&backend=..]&signature=..`` valid ``ttl`` s."""
    validate_key(key)
    method = "GET" if method.upper() == "HEAD" else method.upper()
    if method not in SIGNABLE_METHODS:
        raise ValueError(f"cannot sign method {method!r}; use one of {', '.join(SIGNABLE_METHODS)}")
    if isinstance(ttl, bool) or int(ttl) <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    expires = int(time.time() if now is None else now) + int(ttl)
    unknown = set(extra or {}) - set(SIGNED_EXTRA)
    if unknown:
        raise ValueError(f"cannot sign parameter(s) {', '.join(sorted(unknown))}")
    query = signed_query(secret, method, key, expires, filename, extra)
    return f"{base_url.rstrip('/')}/objects/{quote(key, safe='/')}?{query}"


def batch_url(base_url: str, secret: str | bytes, prefix: str, ttl: int, now: float | None = None,
              extra: Mapping[str, str] | None = None) -> str:
    """``<base_url>/batches/<prefix>?...``: a link to upload many objects under ``prefix`` in one request
    (``shared.object_batch``), signed as a POST of the prefix."""
    if not is_key_prefix(prefix):
        raise InvalidKey(f"not a key prefix: {prefix!r} (whole key segments ending in '/')")
    if isinstance(ttl, bool) or int(ttl) <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    unknown = set(extra or {}) - set(SIGNED_EXTRA)
    if unknown:
        raise ValueError(f"cannot sign parameter(s) {', '.join(sorted(unknown))}")
    expires = int(time.time() if now is None else now) + int(ttl)
    query = signed_query(secret, BATCH_METHOD, prefix, expires, None, extra)
    return f"{base_url.rstrip('/')}/batches/{quote(prefix, safe='/')}?{query}"


def check_batch_link(secret: str | bytes, prefix: str, args: Mapping[str, str], now: float | None = None) -> None:
    """Raise a 403 ``ApiError`` unless the query carries a valid, unexpired batch signature for ``prefix``."""
    _verify(secret, BATCH_METHOD, prefix, args, now)
    if not is_key_prefix(prefix):
        raise ApiError(400, "invalid_key", f"not a key prefix: {prefix!r}")


def _verify(secret: str | bytes, method: str, key: str, args: Mapping[str, str], now: float | None) -> None:
    try:
        verify_query(secret, method, key, args, now=now, extra_names=SIGNED_EXTRA)
    except LinkExpired:
        raise ApiError(403, "link_expired", LINK_EXPIRED_MESSAGE) from None
    except BadSignature:
        raise ApiError(403, "invalid_signature", INVALID_SIGNATURE_MESSAGE) from None


def check_link(secret: str | bytes, method: str, key: str, args: Mapping[str, str],
               now: float | None = None) -> None:
    """Raise a 403 ``ApiError`` unless the query carries a valid, unexpired signature for this method and key."""
    _verify(secret, method, key, args, now)
    try:  # a genuine link for a key no backend may hold (signed by mistake, or with a leaked secret)
        validate_key(key)
    except InvalidKey as exc:
        raise ApiError(400, "invalid_key", str(exc)) from None


def _body_chunks(request: Request) -> Iterator[bytes]:
    # ``request.stream`` is the server's de-chunked input (shared.http marks eventlet's input as terminated);
    # reading it in bounded chunks keeps memory flat whatever the body size.
    stream = request.stream
    expected = request.content_length
    received = 0
    while True:
        try:
            chunk = stream.read(CHUNK_SIZE)
        except (OSError, ValueError) as exc:  # broken chunked framing, connection lost
            raise ApiError(400, "incomplete_body", "The upload was interrupted before it was complete.") from exc
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    if expected is not None and received != expected:
        # A short Content-Length body means the client went away: never store a truncated object.
        raise ApiError(400, "incomplete_body", f"Expected {expected} bytes, received {received}.")


def store_object(backend: ObjectBackend, key: str, request: Request, max_size: int | None = None) -> ObjectInfo:
    """Stream the request body into ``key`` of ``backend``."""
    return _put(backend, key, _body_chunks(request), request.mimetype or None, max_size)


def store_batch(backend: ObjectBackend, prefix: str, request: Request, max_size: int | None = None,
                stored: list[ObjectInfo] | None = None) -> list[ObjectInfo]:
    """Stream every object of a batch body (``shared.object_batch``) into ``backend`` (``put_batch``); each key
    must lie under ``prefix``. ``stored`` (given: filled in as objects are stored) lets the caller index what was
    stored before a failure half-way."""
    stored = [] if stored is None else stored
    body = _body_chunks(request)
    pending = bytearray()

    def read(n: int) -> bytes:
        while not pending:
            chunk = next(body, b"")
            if not chunk:
                return b""
            pending.extend(chunk)
        data = bytes(pending[:n])
        del pending[:n]
        return data

    def items() -> Iterator[tuple[str, Iterator[bytes], str | None]]:
        for header, chunks in object_batch.decode(read):
            key, content_type = header["key"], header.get("content_type")
            if not key.startswith(prefix):
                raise ApiError(400, "invalid_key", f"{key!r} is not under the batch's prefix {prefix!r}")
            yield key, chunks, content_type if isinstance(content_type, str) else None
        if pending or next(body, b""):
            raise ApiError(400, "invalid_batch", "The batch upload has bytes after its end.")

    try:
        return _mapped_errors(lambda: backend.put_batch(items(), max_size=max_size, stored=stored))
    except object_batch.BatchFormatError as exc:
        raise ApiError(400, "invalid_batch", f"The batch upload is not valid: {exc}.") from None


def _put(backend: ObjectBackend, key: str, chunks: Iterator[bytes], content_type: str | None,
         max_size: int | None) -> ObjectInfo:
    return _mapped_errors(lambda: backend.put_stream(key, chunks, content_type=content_type, max_size=max_size))


def _mapped_errors(write: Callable[[], T]) -> T:
    try:
        return write()
    except InvalidKey as exc:
        raise ApiError(400, "invalid_key", str(exc)) from None
    except ObjectTooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except StorageError as exc:
        raise _backend_failure(exc) from None


def stored_response(info: ObjectInfo, **extra: object) -> Response:
    """201 ``{"key", "size", "sha256", **extra}`` (storage adds where the object lives and when it expires)."""
    return json_response(
        {"key": info.key, "size": info.size, "sha256": info.sha256, **extra},
        status=201,
        headers={"ETag": f'"{info.sha256}"'},
    )


def resolve_range(request: Request, size: int, etag: str) -> tuple[int, int] | None:
    """The single byte range ``[start, stop)`` to send, ``None`` for the whole object, or a 416 ``ApiError``.

    Multi-range, other units, malformed headers and a stale ``If-Range`` fall back to the whole object, as RFC 9110
    allows. A suffix longer than the object means the whole object; a zero-length suffix (``bytes=-0``) is a 416.
    """
    rng = request.range
    zero_suffix = rng is None and _ZERO_SUFFIX.fullmatch(request.headers.get("Range", "")) is not None
    if not zero_suffix and (rng is None or rng.units != "bytes" or len(rng.ranges) != 1):
        return None
    if "If-Range" in request.headers and request.if_range.etag != etag:
        return None
    if rng is None:  # only "bytes=-0" gets here without a parsed range
        raise _unsatisfiable(size)
    start, stop = rng.ranges[0]
    if start < 0:  # suffix: the last -start bytes
        if size == 0:
            raise _unsatisfiable(size)
        return max(0, size + start), size
    if start >= size:
        raise _unsatisfiable(size)
    return start, size if stop is None else min(stop, size)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"The requested range is outside the object ({size} bytes).",
        headers={"Content-Range": f"bytes */{size}"},
    )


def serve_object(backend: ObjectBackend, key: str, request: Request) -> Response:
    """GET/HEAD of ``key``: streamed body, single-range support, ETag = sha256, download as attachment."""
    try:
        reader = backend.open(key)
    except InvalidKey as exc:
        raise ApiError(400, "invalid_key", str(exc)) from None
    except ObjectNotFound:
        raise ApiError(404, "not_found", "No object exists at this address (it may have been deleted).") from None
    except StorageError as exc:
        raise _backend_failure(exc) from None
    info = reader.info
    try:
        span = resolve_range(request, info.size, info.sha256)
    except ApiError:
        reader.close()
        raise
    start, stop = span if span is not None else (0, info.size)
    headers = {
        "Content-Length": str(stop - start),
        "Accept-Ranges": "bytes",
        "ETag": f'"{info.sha256}"',
        "Last-Modified": http_date(info.created_at),
        "Content-Disposition": content_disposition(request.args.get("filename") or key),
        "X-Content-Type-Options": "nosniff",  # user-supplied bytes: the browser must not reinterpret them
        "Cache-Control": "private, no-transform",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size}"
    if request.method == "HEAD":
        reader.close()
        body: Iterator[bytes] = iter(())  # no download from a remote backend for a body nobody reads
    else:
        try:
            body = reader.iter_range(start, stop)  # remote backends start their download here
        except ObjectNotFound:
            raise ApiError(404, "not_found", "No object exists at this address (it may have been deleted).") from None
        except StorageError as exc:
            raise _backend_failure(exc) from None
    # direct_passthrough: Werkzeug hands our iterator to the server untouched, which streams it after the worker
    # returns and closes it (and the file) at the end, on HEAD and when the client disconnects.
    return Response(
        body,
        status=206 if span is not None else 200,
        headers=headers,
        content_type=info.content_type,
        direct_passthrough=True,
    )
