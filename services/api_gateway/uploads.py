"""Archive uploads: the ``file`` part of a multipart request streams straight into storage, never whole in memory.

The multipart body is parsed incrementally (Werkzeug's sans-IO ``MultipartDecoder``) while it is read from the
socket, and the file part's bytes are handed, chunk by chunk, to a ``store`` callable (``StorageClient.put``, a
chunked HTTP PUT to the storage data plane). ``request.files`` is never touched: it would spool the whole upload
first. The size limit is enforced while streaming, so an oversized upload is cut off at the limit, and storage
discards the partial object.

The pieces are shared by the archive import (``receive_archive``) and the upload API (``media_uploads``):
``file_parts`` yields the file parts of a request one after the other, each with its data as a bounded stream;
``store_guarded`` runs a store callable over such a stream; ``put_to_storage`` is ``StorageClient.put`` with storage's
failures as HTTP errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData
from werkzeug.wrappers import Request

from shared.http import ApiError
from shared.rpc import RpcTimeout
from shared.storage_client import StorageClient, StorageRefused, StorageUnreachable

CHUNK_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024  # preamble and part headers: anything larger is not a browser's or curl's upload
MAX_FIELD_BYTES = 64 * 1024  # other (non-file) fields are skipped, but not without bound
MAX_PARTS = 16
ALLOWED_EXTENSIONS = (".zip",)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, for the Content-Length pre-check

Store = Callable[[str, Iterator[bytes]], dict[str, Any]]  # (filename, chunks) -> {"key", "size", "sha256"}
T = TypeVar("T")


@dataclass(frozen=True)
class Upload:
    filename: str  # as the client sent it (for messages only)
    key: str  # where storage holds it
    size: int
    sha256: str


@dataclass(frozen=True)
class FilePart:
    """A file part of a multipart body: its field, the name the client sent, and its data (read it once, in order)."""

    field: str
    filename: str
    chunks: Iterator[bytes]


def too_large(max_bytes: int, what: str = "The archive") -> ApiError:
    return ApiError(413, "too_large", f"{what} is larger than the limit of {max_bytes} bytes.")


def check_request(request: Request, max_bytes: int, *, hint: str = "the archive in the field 'file'",
                  too_large_error: ApiError | None = None) -> bytes:
    """The multipart boundary of the request, or a 400/413 before a byte of the body is read.

    ``hint`` completes "Send ... as multipart/form-data"; ``too_large_error`` replaces the default 413 when the
    Content-Length already exceeds ``max_bytes`` plus the multipart overhead.
    """
    if request.mimetype != "multipart/form-data":
        raise ApiError(400, "not_multipart", f"Send {hint} as multipart/form-data.")
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "not_multipart", "The multipart/form-data request has no valid boundary.")
    if request.content_length is not None:
        if request.content_length == 0:
            raise ApiError(400, "empty_body", f"The request body is empty: attach {hint}.")
        if request.content_length > max_bytes + MULTIPART_OVERHEAD:
            raise too_large_error or too_large(max_bytes)
    return boundary.encode("latin-1")


def _events(request: Request, boundary: bytes, hint: str) -> Iterator[Any]:
    """Multipart events as the body arrives; bounded buffering outside file data."""
    decoder = MultipartDecoder(boundary, max_form_memory_size=None, max_parts=MAX_PARTS)
    stream = request.stream
    received = 0
    while True:
        try:
            event = decoder.next_event()
        except ValueError:
            if decoder.complete and decoder.state.name != "PREAMBLE":  # the body ended inside a part
                raise ApiError(400, "incomplete_body", "The upload ended before the multipart body was complete.")\
                    from None
            raise ApiError(400, "malformed_multipart", "The multipart body is malformed.") from None
        except RequestEntityTooLarge:
            raise ApiError(400, "malformed_multipart", f"More than {MAX_PARTS} parts in the body.") from None
        if isinstance(event, NeedData):
            if len(decoder.buffer) > MAX_HEADER_BYTES + CHUNK_SIZE:
                raise ApiError(400, "malformed_multipart", "The multipart body has oversized headers.")
            try:
                chunk = stream.read(CHUNK_SIZE)
            except (OSError, ValueError, ClientDisconnected) as exc:
                raise ApiError(400, "incomplete_body", "The upload was interrupted before it was complete.") from exc
            if not chunk and received == 0:  # chunked, or no Content-Length: nothing came at all
                raise ApiError(400, "empty_body", f"The request body is empty: attach {hint}.")
            received += len(chunk)
            decoder.receive_data(chunk or None)
            continue
        yield event
        if isinstance(event, Epilogue):
            return


def _part_data(events: Iterator[Any], limit: int, on_limit: Callable[[], ApiError]) -> Iterator[bytes]:
    """The data of the current part, chunk by chunk; raises ``on_limit()`` beyond ``limit`` bytes."""
    size = 0
    for event in events:
        if not isinstance(event, Data):
            raise ApiError(400, "malformed_multipart", "The multipart body is malformed.")
        size += len(event.data)
        if size > limit:
            raise on_limit()
        if event.data:
            yield event.data
        if not event.more_data:
            return
    raise ApiError(400, "incomplete_body", "The upload ended before the file was complete.")


def file_parts(request: Request, *, fields: tuple[str, ...], max_bytes: int, hint: str,
               max_body: int | None = None, what: str = "The file") -> Iterator[FilePart]:
    """The file parts of a multipart request named one of ``fields``, in body order, as they arrive.

    Each part's ``chunks`` must be consumed (or abandoned by stopping the iteration) before the next part is asked
    for; more than ``max_bytes`` in one part raises ``too_large`` (413, "``what`` is larger..."). Other parts are
    read and dropped (bounded); a text part named one of ``fields`` is a 400 ``missing_file`` (its sender meant a
    file). ``max_body`` bounds the whole body for the Content-Length pre-check (default ``max_bytes``); ``hint``
    says what to send, for 400 messages.
    """
    max_body = max_bytes if max_body is None else max_body
    body_error = too_large(max_bytes, what) if max_body == max_bytes else \
        ApiError(413, "too_large", f"The request is larger than the limit of {max_body} bytes.")
    events = _events(request, check_request(request, max_body, hint=hint, too_large_error=body_error), hint)
    for event in events:
        if isinstance(event, Epilogue):
            return
        if isinstance(event, File) and event.name in fields:
            chunks = _part_data(events, max_bytes, lambda: too_large(max_bytes, what))
            yield FilePart(field=event.name, filename=event.filename or "", chunks=chunks)
            for _ in chunks:  # whatever the consumer left of this part
                pass
        elif isinstance(event, Field) and event.name in fields:
            raise ApiError(400, "missing_file", f"The field '{event.name[:40]}' holds text, not a file: attach {hint} "
                                                "as a file (a multipart part with a file name).")
        elif isinstance(event, Field | File):
            oversized = ApiError(400, "invalid_request",
                                 f"Unexpected large field '{event.name}': send only {hint}.")
            for _ in _part_data(events, MAX_FIELD_BYTES, lambda error=oversized: error):
                pass


def receive_archive(request: Request, *, max_bytes: int, store: Store, field_name: str = "file",
                    extensions: tuple[str, ...] | None = ALLOWED_EXTENSIONS) -> Upload:
    """Stream the ``field_name`` file of a multipart request into ``store``; 400/413 ``ApiError`` on bad input.

    The file must be non-empty, at most ``max_bytes`` and named with one of ``extensions`` (None: any name). Other
    parts are read and dropped (bounded).
    """
    hint = f"the archive in the field '{field_name}'"
    for part in file_parts(request, fields=(field_name,), max_bytes=max_bytes, hint=hint, what="The archive"):
        return _store_file(part, store, extensions)
    raise ApiError(400, "missing_file", f"No file in the field '{field_name}': attach the archive as "
                                        f"'{field_name}' (multipart/form-data).")


def _store_file(part: FilePart, store: Store, extensions: tuple[str, ...] | None = ALLOWED_EXTENSIONS) -> Upload:
    filename = part.filename
    if extensions is not None and not filename.lower().endswith(extensions):
        raise ApiError(400, "invalid_file_type",
                       f"'{filename[:200]}' is not a .zip archive: upload an Open Event archive as a .zip file.")
    first = next(part.chunks, None)  # an empty file is refused before anything reaches storage
    if first is None:
        raise ApiError(400, "empty_file", f"The file '{filename[:200]}' is empty.")
    stored = store_guarded(chain([first], part.chunks), lambda chunks: store(filename, chunks))
    return Upload(filename=filename, key=stored["key"], size=stored["size"], sha256=stored["sha256"])


def store_guarded(chunks: Iterator[bytes], store: Callable[[Iterator[bytes]], T]) -> T:
    """``store(chunks)``, re-raising the ``ApiError`` (413, 400) the chunks raised even if ``store`` wrapped it."""
    failure: list[ApiError] = []

    def guarded() -> Iterator[bytes]:
        # The HTTP client may wrap or swallow an exception raised inside its body iterator: remember ours.
        try:
            yield from chunks
        except ApiError as exc:
            failure.append(exc)
            raise

    try:
        result = store(guarded())
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    if failure:
        raise failure[0]
    return result


def put_to_storage(storage: StorageClient, key: str, chunks: Iterator[bytes], *, content_type: str,
                   what: str = "the archive", link_ttl: int = 3600, **link: Any) -> dict[str, Any]:
    """``storage.put`` of an upload the gateway relays: ``{"size", "sha256"}``; ``link`` goes to the signed link
    (``backend``, ``owner``, ``keep_seconds``). Storage down or refusing is a 503 ``ApiError`` naming ``what``."""
    try:
        stored = storage.put(key, chunks, content_type=content_type, link_ttl=link_ttl, **link)
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", "Storage is not answering; try the upload again later.") from exc
    except StorageUnreachable as exc:
        raise ApiError(503, "storage_unavailable", f"{what[:1].upper()}{what[1:]} could not be stored; "
                                                   "try again later.") from exc
    except StorageRefused as exc:
        raise ApiError(503, "storage_error", f"Storage refused {what} ({exc}).") from None
    return {"size": stored["size"], "sha256": stored["sha256"]}
