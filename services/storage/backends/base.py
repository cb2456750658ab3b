"""The one interface every object backend implements (local, S3, GCS, Dropbox, Seafile) and the helpers they share;
their vocabulary (``ObjectInfo``, the errors, ``validate_key``) is ``services/storage/types.py``.

Contract (``tests/integration/test_storage_backends.py`` runs one suite over every backend):

- ``put_stream`` consumes an iterable of byte chunks in memory that does not grow with the object, computes size and
  sha256 on the way, and either stores the whole object under ``key`` (replacing any previous one) or raises and
  leaves the previous object as it was;
- ``stat`` returns exactly the ``ObjectInfo`` that ``put_stream`` returned, or ``None``;
- ``open_range`` raises ``ObjectNotFound`` at once for a missing key, else returns an iterator of chunks of bytes
  ``[start, stop)`` (Python slice convention, clamped to the object) that has a ``close()``;
- ``presigned_get`` returns a URL the backend itself serves (S3, GCS), or ``None`` when it cannot sign (local,
  Dropbox, Seafile): the storage data plane then proxies the bytes through ``open_range``;
- failures of the remote service raise ``BackendError`` whose message names the backend, operation and key, never a
  credential, token or signed URL.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from services.storage.types import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    BackendError,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    validate_key,
)

__all__ = [
    "BackendError", "BackendObjectReader", "ChunkStream", "HashingReader", "Incoming", "ObjectBackend", "RemoteBackend",
]


class ObjectBackend(abc.ABC):
    """What the storage service needs from a place that keeps bytes."""

    name: str

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        """Store ``chunks`` under ``key``; raises ``ObjectTooLarge`` past ``max_size`` bytes (nothing is stored)."""

    def put_batch(self, items: Iterable[tuple[str, Iterable[bytes], str | None]], max_size: int | None = None,
                  stored: list[ObjectInfo] | None = None) -> list[ObjectInfo]:
        """Store ``(key, chunks, content_type)`` items in turn, each as ``put_stream`` would; ``stored`` (given:
        filled in as objects are stored) tells a caller what was stored before a failure half-way. Backends that can
        make a batch durable at once override it."""
        stored = [] if stored is None else stored
        for key, chunks, content_type in items:
            stored.append(self.put_stream(key, chunks, content_type=content_type, max_size=max_size))
        return stored

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, sha256, content type and creation time, or ``None`` if there is no object."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; ``True`` if there was one."""

    @abc.abstractmethod
    def open_range(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Chunks of bytes ``[start, stop)`` of ``key``; ``ObjectNotFound`` at once if it is missing."""

    @abc.abstractmethod
    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        """A URL served by the backend, valid ``ttl`` seconds, downloading as ``filename``; ``None`` if unsupported."""

    def check_container(self) -> None:  # noqa: B027 - optional: most backends' put fails clearly by itself
        """Raise ``BackendError`` if the bucket (or folder, library...) objects go to does not exist; backends
        whose put would fail clearly anyway need not check."""

    def open(self, key: str) -> BackendObjectReader:
        """``stat`` + ``open_range`` behind the ``ObjectReader`` shape the data plane uses for the local backend.

        Unlike the local backend, a concurrent overwrite between the two calls is not excluded here; backends that
        can pin a version (S3 ETag, GCS generation) may override this.
        """
        info = self.stat(key)
        if info is None:
            raise ObjectNotFound(f"no object with key {key!r}")
        return BackendObjectReader(self, info)


class RemoteBackend(ObjectBackend):
    """A backend behind a remote service (S3, GCS, Dropbox, Seafile): ``open_range`` asks the service with a
    ``Range`` header, except for an empty range, which fetches nothing (a missing key still fails)."""

    def open_range(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        rng = range_header(start, stop)
        if stop is not None and stop <= start:
            if not self._exists(key):
                raise ObjectNotFound(f"no object with key {key!r}")
            return empty_stream()
        stream = self._fetch_range(key, start, stop, rng)
        if stream is None:
            raise ObjectNotFound(f"no object with key {key!r}")
        return stream

    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        validate_key(key)
        return None  # cannot sign links (the default): the storage data plane proxies the bytes

    def _exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abc.abstractmethod
    def _fetch_range(self, key: str, start: int, stop: int | None, rng: str | None) -> Iterator[bytes] | None:
        """Chunks of ``[start, stop)`` as the ``Range`` value ``rng`` asks (``None``: the whole object); ``None``
        (or ``ObjectNotFound``) if there is no object."""


class BackendObjectReader:
    """One object, described by ``info``; ``iter_range`` fetches bytes lazily from the backend."""

    def __init__(self, backend: ObjectBackend, info: ObjectInfo) -> None:
        self.info = info
        self._backend = backend

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        stop = self.info.size if stop is None else min(stop, self.info.size)
        return self._backend.open_range(self.info.key, start, stop)

    def close(self) -> None:
        pass

    def __enter__(self) -> BackendObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HashingReader:
    """A read-only, forward-only file over an iterable of chunks that counts and hashes every byte it hands out.

    ``read(n)`` returns exactly ``n`` bytes unless the chunks run out, so callers can cut fixed-size parts; memory
    held is at most one part plus one incoming chunk. ``tell()`` is there for clients that ask (GCS resumable upload).
    """

    def __init__(self, chunks: Iterable[bytes], max_size: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self._max_size = max_size
        self._hasher = hashlib.sha256()
        self._received = 0
        self._position = 0
        self._eof = False
        # What the caller's iterable raised (client gone, ...): backends re-raise it as it is, even when a client
        # library wrapped it or it looks like one of their transport errors (ConnectionResetError is an OSError).
        self.source_error: BaseException | None = None

    def raise_source_error(self) -> None:
        if self.source_error is not None:
            raise self.source_error

    def _pull(self) -> bool:
        """Load the next non-empty chunk into ``_pending``; ``False`` at the end of the input."""
        while not self._eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                break
            except BaseException as exc:
                self.source_error = exc
                raise
            if not chunk:
                continue
            self._received += len(chunk)
            if self._max_size is not None and self._received > self._max_size:
                self.source_error = ObjectTooLarge(f"object larger than {self._max_size} bytes")
                raise self.source_error
            # Hash on arrival: every chunk is handed out exactly once and in order.
            self._hasher.update(chunk)
            self._pending = memoryview(bytes(chunk) if not isinstance(chunk, bytes) else chunk)
            return True
        return False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("HashingReader.read needs a size: reading everything would defeat streaming")
        return bytes(self.read_part(n))

    def read_part(self, n: int) -> bytearray:
        """Up to ``n`` bytes in one buffer filled in place (no second copy of the part: S3 parts are big)."""
        buffer = bytearray(n)
        view = memoryview(buffer)
        filled = 0
        while filled < n:
            if not self._pending and not self._pull():
                break
            take = min(n - filled, len(self._pending))
            view[filled : filled + take] = self._pending[:take]
            self._pending = self._pending[take:]
            filled += take
        view.release()
        del buffer[filled:]
        self._position += filled
        return buffer

    def at_eof(self) -> bool:
        """``True`` once every byte has been read (pulls one chunk ahead if it must)."""
        return not self._pending and not self._pull()

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        return self._position

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()


class Incoming(HashingReader):
    """What ``put_stream`` was given, read through a ``HashingReader``: the object's key, its content type
    (defaulted) and creation time; ``info()`` describes the object once everything is read."""

    def __init__(self, key: str, chunks: Iterable[bytes], content_type: str | None, max_size: int | None) -> None:
        super().__init__(chunks, max_size)
        self.key = key
        self.content_type = content_type or DEFAULT_CONTENT_TYPE
        self.created_at = datetime.now(UTC)

    def info(self) -> ObjectInfo:
        return ObjectInfo(self.key, self.size, self.sha256, self.created_at, self.content_type)


class ChunkStream:
    """An iterator of chunks with ``close()`` that releases the underlying response, however iteration ends.

    A class rather than a generator for the same reason as ``local.ChunkIterator``: WSGI servers call
    ``close()`` on response bodies that were never started. Transport errors mid-stream become ``BackendError``.
    """

    def __init__(
        self, chunks: Iterable[bytes], close: Callable[[], None] | None = None, what: str = "download"
    ) -> None:
        self._chunks = iter(chunks)
        self._close = close
        self._what = what

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> bytes:
        try:
            while True:
                chunk = next(self._chunks)
                if chunk:
                    return bytes(chunk)
        except StopIteration:
            self.close()
            raise
        except StorageError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise BackendError(f"{self._what} interrupted ({type(exc).__name__})") from None

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            try:
                close()
            except Exception:  # releasing a connection must never mask the caller's outcome
                pass


def empty_stream() -> ChunkStream:
    return ChunkStream(())


def range_header(start: int, stop: int | None) -> str | None:
    """The HTTP ``Range`` value for ``[start, stop)``, or ``None`` for the whole object."""
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError("byte offsets must not be negative")
    if start == 0 and stop is None:
        return None
    return f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"


def ranged_body(response: Any, rng: str | None, start: int, fail: Callable[[str], BackendError],
                what: str) -> ChunkStream | None:
    """The body of a ranged HTTP GET (a ``requests`` response) as a stream; ``None`` for 404, an empty stream for 416
    (``start`` at or past the end); ``fail(reason)`` is raised for any other refusal."""
    if response.status_code == 404:
        response.close()
        return None
    if response.status_code == 416:
        response.close()
        return empty_stream()
    if response.status_code not in (200, 206):
        response.close()
        raise fail(f"HTTP {response.status_code}")
    if rng and response.status_code == 200 and start > 0:
        response.close()  # a server that ignored Range would send the wrong bytes
        raise fail("the server ignored the Range header")
    return ChunkStream(response.iter_content(CHUNK_SIZE), close=response.close, what=what)


def sidecar_info(key: str, size: int, sidecar: Mapping[str, Any], fallback_created_at: datetime) -> ObjectInfo:
    """The ``ObjectInfo`` a sidecar records (the JSON of ``ObjectInfo.to_dict()`` a backend keeps beside the bytes
    where the service has no custom metadata); ``size`` is what the service reports."""
    return ObjectInfo(
        key=key,
        size=size,
        sha256=str(sidecar.get("sha256", "")),
        created_at=parse_created_at(sidecar.get("created_at"), fallback_created_at),
        content_type=sidecar.get("content_type") or DEFAULT_CONTENT_TYPE,
    )


def positive_ttl(ttl: int) -> int:
    """A presigned link's lifetime in whole seconds; ``ValueError`` unless it is a positive number."""
    if isinstance(ttl, bool) or int(ttl) <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    return int(ttl)


def format_created_at(value: datetime) -> str:
    return value.isoformat()


def parse_created_at(value: str | None, fallback: datetime) -> datetime:
    if not value:
        return fallback
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return fallback
