"""The upload API: ``POST /v1/upload/file`` and ``POST /v1/upload/image`` (files and images users attach to events).

A multipart body carries one file in the field ``file`` (answer ``{"url": "..."}``) or several in ``files[]``
(answer ``{"url": ["...", ...]}``, in body order). Each file streams from the request into storage (the multipart
parser and the chunked PUT of ``uploads.py``); only its first ``SNIFF_BYTES`` are held, to judge the content by its
magic bytes (``shared.media_types``), never by its name. The image endpoint accepts JPEG, PNG, GIF and WebP, and
names the stored file with the detected type's extension (a JPEG sent as ``photo.png`` is ``photo.jpg``); SVG and
images with script markup inside are refused (they can run scripts). The file endpoint accepts anything: storage
always serves uploads as attachments with ``X-Content-Type-Options: nosniff``, and only a few known-safe types keep
a precise Content-Type.

Objects are stored at ``uploads/<user id>/<uuid>/<sanitized name>``; the answer holds the stable public address
``<GATEWAY_URL>/media/<key>``, which redirects to a fresh signed storage link on every request (as re-hosted import
media do), so it never expires. A request that fails half-way deletes the files it had already stored.

Plain functions; ``service.py`` wires them to entrypoints.
"""

from __future__ import annotations

import contextlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal

from werkzeug.wrappers import Request

from services.api_gateway.uploads import file_parts, put_to_storage, store_guarded
from shared import object_keys
from shared.config import Settings
from shared.http import ApiError
from shared.media_types import SNIFF_BYTES, extension_for, identify, sniff
from shared.rpc import RpcTimeout
from shared.storage_client import ObjectGone, ObjectNotFound, StorageClient

_log = logging.getLogger(__name__)

Kind = Literal["file", "image"]
FILE_FIELD = "file"
FILES_FIELD = "files[]"
MAX_FILES = 10  # per request, in files[]
UPLOAD_LINK_TTL = 3600  # the gateway's PUT link to storage
MAX_STEM = 100
MAX_EXTENSION = 16
LOCAL_BACKEND = "local"

# identify() description -> Content-Type of the images the image endpoint accepts (their extension: extension_for).
IMAGE_TYPES: dict[str, str] = {
    "JPEG image": "image/jpeg",
    "PNG image": "image/png",
    "GIF image": "image/gif",
    "WebP image": "image/webp",
}
ACCEPTED_IMAGES = "a JPEG, PNG, GIF or WebP image"
# Files are always served as attachments; these contents keep their type, everything else is application/octet-stream.
FILE_CONTENT_TYPES: dict[str, str] = {
    **IMAGE_TYPES,
    "PDF document": "application/pdf",
}
OCTET_STREAM = "application/octet-stream"


PutObject = Callable[[str, Iterator[bytes], str], dict[str, Any]]  # (key, chunks, content type) -> {"size", "sha256"}
DeleteObject = Callable[[str], object]


@dataclass(frozen=True)
class StoredUpload:
    key: str
    filename: str  # the sanitized name, last segment of the key
    size: int
    sha256: str
    content_type: str


# --- request parameters and names ------------------------------------------------------------------------------------

def parse_force_local(value: str | None) -> bool:
    """``?force_local=true`` or ``false``, nothing else (as the README says); absent means ``false``."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise ApiError(400, "invalid_parameter", f"force_local must be true or false, not '{(value or '')[:50]}'.")


def upload_file_name(raw: str, extension: str | None = None) -> str:
    """A storage-safe name for an uploaded file: the last path segment, no control characters, ASCII letters,
    digits and ``._-`` (accents transliterated, other runs replaced by ``_``), no ``..``, the extension kept (lower
    case). ``"../../x/Ünïcode Photo (1).JPG"`` -> ``"Unicode_Photo_1.jpg"``, ``"日本.pdf"`` -> ``"file.pdf"``. What is
    not a file name at all (``"../"``, ``".."``, control characters only) is a 400 ``invalid_file_name``.
    ``extension`` (``"jpg"``, the detected type's) replaces the client's: a name never claims another type.
    """
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))  # control, format, private
    if not name.strip(". \t"):
        raise ApiError(400, "invalid_file_name",
                       f"'{shown_name(raw)}' is not a file name (a path, dots or control characters only): "
                       "send the file with its name, e.g. photo.jpg.")
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").strip()
    stem, dot, ext = name.rpartition(".")
    if not dot or not re.fullmatch(rf"[A-Za-z0-9]{{1,{MAX_EXTENSION}}}", ext):
        stem, ext = name, ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")[:MAX_STEM].rstrip("._-")
    stem = stem or "file"  # nothing left of a name in another script: a neutral one
    ext = extension or ext
    return f"{stem}.{ext.lower()}" if ext else stem


def shown_name(raw: str) -> str:
    """The client's file name as it may appear in a message: printable characters only, at most 200."""
    return "".join(ch for ch in raw if ch.isprintable())[:200]


def check_public_key(key: str) -> str:
    """Keys served without credentials by ``GET /media/<key>``: uploads, and media re-hosted by imports (else 404)."""
    if not object_keys.is_public_key(key):
        raise ApiError(404, "not_found", "No media exists at this address.")
    return key


def response_body(gateway_url: str, multiple: bool, stored: list[StoredUpload]) -> dict[str, Any]:
    """``{"url": "..."}`` for the field ``file``, ``{"url": [...]}`` for ``files[]`` (the Open Event Server's shape)."""
    urls = [object_keys.public_url(gateway_url, item.key) for item in stored]
    return {"url": urls if multiple else urls[0]}


# --- content -------------------------------------------------------------------------------------------------------

def _image_header_ok(description: str, head: bytes) -> bool:
    """The fixed header after the magic bytes is there too (a bare signature is not an image)."""
    if description == "PNG image":
        return head[12:16] == b"IHDR"
    if description == "WebP image":
        return head[12:15] == b"VP8"
    if description == "GIF image":
        return len(head) >= 13
    if description == "JPEG image":
        return len(head) >= 4 and head[3] >= 0xC0
    return False


def classify(head: bytes, kind: Kind, raw_name: str) -> tuple[str, str | None]:
    """(Content-Type to store, extension of the detected image or ``None``) for a file starting with ``head``.

    The image endpoint raises 400 ``not_an_image`` naming what was detected.
    """
    found = identify(head)
    description = found[1] if found else "unrecognised content"
    if kind == "file":
        return FILE_CONTENT_TYPES.get(description, OCTET_STREAM), None
    refusal = sniff(head, "image")  # SVG and script-bearing images are refused here as by the importer and exporter
    if description in IMAGE_TYPES and _image_header_ok(description, head) and refusal is None:
        return IMAGE_TYPES[description], extension_for(head, "image").lstrip(".")
    name = shown_name(raw_name)
    if description in IMAGE_TYPES and refusal is not None and "script" in refusal:
        message = f"The file '{name}' is {refusal}: upload {ACCEPTED_IMAGES} without markup."
    elif description == "SVG image":
        message = f"The file '{name}' is an SVG image, which is not accepted (SVG can carry scripts): " \
                  f"upload {ACCEPTED_IMAGES}."
    elif description in IMAGE_TYPES:
        message = f"The file '{name}' starts like a {description} but its header is truncated or corrupt: " \
                  f"upload {ACCEPTED_IMAGES}."
    elif found is not None and found[0] == "image":
        message = f"The file '{name}' is a {description}, which is not accepted: upload {ACCEPTED_IMAGES}."
    else:
        message = f"The file '{name}' is not an image (detected: {description}): upload {ACCEPTED_IMAGES}."
    raise ApiError(400, "not_an_image", message)


def read_head(chunks: Iterator[bytes], size: int = SNIFF_BYTES) -> bytes:
    """At least ``size`` leading bytes (less at the end of the data), taken from ``chunks``; at most one chunk more."""
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if len(head) >= size:
            break
    return bytes(head)


# --- the request ---------------------------------------------------------------------------------------------------

def receive_uploads(request: Request, *, kind: Kind, max_bytes: int, user_id: int, put: PutObject,
                    delete: DeleteObject) -> tuple[bool, list[StoredUpload]]:
    """Stream every file of the request into storage: (sent as ``files[]``, what was stored, in body order).

    All or nothing: when a file is refused (or the body breaks) after others were stored, those are deleted again.
    """
    noun = "image" if kind == "image" else "file"
    hint = f"the {noun} in the field '{FILE_FIELD}' (or several in '{FILES_FIELD}')"
    stored: list[StoredUpload] = []
    multiple: bool | None = None
    try:
        parts = file_parts(request, fields=(FILE_FIELD, FILES_FIELD), max_bytes=max_bytes, hint=hint,
                           max_body=max_bytes * MAX_FILES, what=f"The {noun}")
        for part in parts:
            if multiple is None:
                multiple = part.field == FILES_FIELD
            elif not multiple or part.field == FILE_FIELD:
                raise ApiError(400, "invalid_request", f"Send one {noun} in the field '{FILE_FIELD}', or several "
                                                       f"in '{FILES_FIELD}', not both and not '{FILE_FIELD}' twice.")
            if len(stored) >= MAX_FILES:
                raise ApiError(400, "too_many_files", f"At most {MAX_FILES} files per request.")
            stored.append(_store_part(part.filename, part.chunks, kind=kind, user_id=user_id, put=put))
    except Exception:
        for item in stored:
            with contextlib.suppress(Exception):  # the error that stopped the request is the one to report
                delete(item.key)
        raise
    if not stored:
        raise ApiError(400, "missing_file", f"No file in the field '{FILE_FIELD}' (or '{FILES_FIELD}'): attach "
                                            f"the {noun} as multipart/form-data.")
    return bool(multiple), stored


def _store_part(raw_name: str, chunks: Iterator[bytes], *, kind: Kind, user_id: int, put: PutObject) \
        -> StoredUpload:
    if not raw_name:  # what a browser sends for a file input left empty
        raise ApiError(400, "missing_file", "A file field has no file selected (its file name is empty).")
    upload_file_name(raw_name)  # a name that is no name is refused before the content is read
    head = read_head(chunks)
    if not head:
        raise ApiError(400, "empty_file", f"The file '{shown_name(raw_name)}' is empty.")
    content_type, extension = classify(head, kind, raw_name)
    name = upload_file_name(raw_name, extension)
    key = object_keys.upload_key(user_id, name)
    result = store_guarded(chain([head], chunks), lambda data: put(key, data, content_type))
    _log.info("upload stored: %s (%d bytes, %s)", key, result["size"], content_type)
    return StoredUpload(key=key, filename=name, size=result["size"], sha256=result["sha256"],
                        content_type=content_type)


def storage_put(storage: StorageClient, *, force_local: bool, owner: int | None = None,
                meter: Callable[[Iterator[bytes]], Iterator[bytes]] | None = None) -> PutObject:
    """A ``PutObject`` streaming to storage; ``force_local`` asks storage for its local backend (``backend="local"``
    on the signed link) instead of the default one. Files count against user ``owner``'s byte quota, which
    ``meter`` enforces on every chunk (one meter for all files of a request)."""
    link: dict[str, Any] = {"backend": LOCAL_BACKEND} if force_local else {}
    if owner is not None:
        link["owner"] = owner

    def put(key: str, chunks: Iterator[bytes], content_type: str) -> dict[str, Any]:
        return put_to_storage(storage, key, meter(chunks) if meter else chunks, content_type=content_type,
                              what="the file", link_ttl=UPLOAD_LINK_TTL, **link)

    return put


def media_redirect(storage: StorageClient, key: str, ttl: int) -> str:
    """A fresh signed link for the public object ``key`` (``GET /media/<key>``): 404 if there is none, 410 once
    it is gone, 503 while storage does not answer."""
    check_public_key(key)
    try:
        # must_exist: storage answers from its object index, so a key nothing was stored at is a 404 here.
        return storage.signed_url(key, method="GET", ttl=ttl, must_exist=True)
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from exc
    except ObjectNotFound:
        raise ApiError(404, "not_found", "No media exists at this address.") from None
    except ObjectGone as exc:
        raise ApiError(410, "media_gone", f"This file is no longer available ({exc}).") from None


def max_bytes_for(kind: Kind, settings: Settings) -> int:
    return settings.upload_image_max_bytes if kind == "image" else settings.upload_max_bytes
