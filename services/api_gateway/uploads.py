"""Archive uploads: the ``file`` part of a multipart request streams straight into storage, never whole in memory.

The multipart body is parsed incrementally (Werkzeug's sans-IO ``MultipartDecoder``) while it is read from the
socket, and the file part's bytes are handed, chunk by chunk, to a ``store`` callable (a chunked HTTP PUT to the storage
data plane in the gateway). ``request.files`` is never touched: it would spool the whole upload first. The size limit
is enforced while streaming, so an oversized upload is cut off at the limit, and storage discards the partial object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData
from werkzeug.wrappers import Request

from shared.http import ApiError

CHUNK_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024  # preamble and part headers: anything larger is not a browser's or curl's upload
MAX_FIELD_BYTES = 64 * 1024  # other (non-file) fields are skipped, but not without bound
MAX_PARTS = 16
MAX_FILENAME = 100
ALLOWED_EXTENSIONS = (".zip",)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file, for the Content-Length pre-check

Store = Callable[[str, Iterator[bytes]], dict[str, Any]]  # (filename, chunks) -> {"key", "size", "sha256"}


@dataclass(frozen=True)
class Upload:
    filename: str  # as the client sent it (for messages only)
    key: str  # where storage holds it
    size: int
    sha256: str


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "too_large", f"The archive is larger than the limit of {max_bytes} bytes.")


def safe_filename(filename: str) -> str:
    """A storage-safe version of an uploaded name: its last path segment, in ``[A-Za-z0-9._-]``, no ``..``.

    ``"../My Event (2016).ZIP"`` -> ``"My_Event_2016.zip"``; never empty.
    """
    name = re.split(r"[\\/]", filename)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[: MAX_FILENAME - 8] or "archive"
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext).lower()[:6]
    return f"{stem}.{ext}" if ext else stem


def import_key(task_id: str, filename: str) -> str:
    """Storage key of an uploaded archive: ``imports/<task_id>/<safe filename>``."""
    return f"imports/{task_id}/{safe_filename(filename)}"


def check_request(request: Request, max_bytes: int) -> bytes:
    """The multipart boundary of the request, or a 400/413 before a byte of the body is read."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(400, "not_multipart",
                       "Send the archive as multipart/form-data with the zip file in the field 'file'.")
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "not_multipart", "The multipart/form-data request has no valid boundary.")
    if request.content_length is not None:
        if request.content_length == 0:
            raise ApiError(400, "empty_body", "The request body is empty: attach the archive in the field 'file'.")
        if request.content_length > max_bytes + MULTIPART_OVERHEAD:
            raise too_large(max_bytes)
    return boundary.encode("latin-1")


def _events(request: Request, boundary: bytes) -> Iterator[Any]:
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
                raise ApiError(400, "empty_body", "The request body is empty: attach the archive in the field 'file'.")
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


def receive_archive(request: Request, *, max_bytes: int, store: Store, field_name: str = "file") -> Upload:
    """Stream the ``field_name`` file of a multipart request into ``store``; 400/413 ``ApiError`` on bad input.

    The file must be a non-empty ``.zip`` of at most ``max_bytes``. Other parts are read and dropped (bounded).
    """
    events = _events(request, check_request(request, max_bytes))
    for event in events:
        if isinstance(event, Epilogue):
            break
        if isinstance(event, File) and event.name == field_name:
            return _store_file(event, events, max_bytes, store)
        if isinstance(event, Field | File):
            oversized = ApiError(400, "invalid_request",
                                 f"Unexpected large field '{event.name}': send only the field '{field_name}'.")
            for _ in _part_data(events, MAX_FIELD_BYTES, lambda error=oversized: error):
                pass
    raise ApiError(400, "missing_file", f"No file in the field '{field_name}': attach the archive as "
                                        f"'{field_name}' (multipart/form-data).")


def _store_file(part: File, events: Iterator[Any], max_bytes: int, store: Store) -> Upload:
    filename = part.filename or ""
    if not filename.lower().endswith(ALLOWED_EXTENSIONS):
        raise ApiError(400, "invalid_file_type",
                       f"'{filename[:200]}' is not a .zip archive: upload an Open Event archive as a .zip file.")
    chunks = _part_data(events, max_bytes, lambda: too_large(max_bytes))
    first = next(chunks, None)  # an empty file is refused before anything reaches storage
    if first is None:
        raise ApiError(400, "empty_file", f"The file '{filename[:200]}' is empty.")
    failure: list[ApiError] = []

    def guarded() -> Iterator[bytes]:
        # The HTTP client may wrap or swallow an exception raised inside its body iterator: remember ours.
        try:
            yield from chain([first], chunks)
        except ApiError as exc:
            failure.append(exc)
            raise

    try:
        stored = store(filename, guarded())
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    if failure:
        raise failure[0]
    return Upload(filename=filename, key=stored["key"], size=stored["size"], sha256=stored["sha256"])
