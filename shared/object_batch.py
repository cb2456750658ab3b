"""The body of a batch upload to storage's data plane: many objects in one request, each streamed in turn.

A frame is a 4-byte big-endian length and that many bytes. Per object: a header frame (JSON ``{"key",
"content_type"}``), its bytes as data frames, then an empty frame; an empty header frame ends the batch (a body
that stops before it is cut short, never a complete batch). One request instead of one per object: one link to sign,
one index transaction and one round of announcements in storage.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/vnd.event-portability.batch"
SIGN_METHOD = "POST"  # storage's signed_url with this method signs a batch link; its key is then a key prefix
MAX_HEADER_BYTES = 16 * 1024
MAX_FRAME_BYTES = 4 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_END = _LENGTH.pack(0)


class BatchFormatError(ValueError):
    """The body is not a well-formed batch (or it was cut short)."""


@dataclass(frozen=True)
class BatchItem:
    key: str
    content_type: str
    chunks: Iterable[bytes]


def encode(items: Iterable[BatchItem], on_item: Callable[[BatchItem], None] = lambda item: None) -> Iterator[bytes]:
    """The batch body, streamed: each object's chunks are read only when the body gets to them. ``on_item`` is
    called once an object's bytes are all handed on."""
    for item in items:
        header = json.dumps({"key": item.key, "content_type": item.content_type}).encode()
        yield _LENGTH.pack(len(header)) + header
        for chunk in item.chunks:
            for start in range(0, len(chunk), MAX_FRAME_BYTES):
                part = chunk[start:start + MAX_FRAME_BYTES]
                yield _LENGTH.pack(len(part)) + part
        yield _END
        on_item(item)
    yield _END


def decode(read: Callable[[int], bytes]) -> Iterator[tuple[dict[str, Any], Iterator[bytes]]]:
    """``(header, chunks)`` per object of a body read with ``read(n)``; each object's ``chunks`` must be consumed
    before the next object is asked for (what is left of it is skipped). Raises ``BatchFormatError``."""
    while True:
        header_bytes = _frame(read, MAX_HEADER_BYTES, "header")
        if not header_bytes:
            return
        try:
            header = json.loads(header_bytes)
        except ValueError:
            raise BatchFormatError("an object header of the batch is not JSON") from None
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise BatchFormatError("an object header of the batch names no key")
        chunks = _chunks(read)
        yield header, chunks
        for _ in chunks:  # the caller stopped early: skip to the next header
            pass


def _chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while data := _frame(read, MAX_FRAME_BYTES, "data"):
        yield data


def _frame(read: Callable[[int], bytes], limit: int, what: str) -> bytes:
    length = _LENGTH.unpack(_exactly(read, _LENGTH.size))[0]
    if length > limit:
        raise BatchFormatError(f"a {what} frame of the batch is larger than {limit} bytes")
    return _exactly(read, length) if length else b""


def _exactly(read: Callable[[int], bytes], n: int) -> bytes:
    parts = []
    while n:
        data = read(n)
        if not data:
            raise BatchFormatError("the batch ended before it was complete")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)
