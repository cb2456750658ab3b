"""A zip written as a stream of byte chunks: no temp files, no whole archive in memory.

``zipfile`` writes to an unseekable sink with data descriptors after each member, so we hand it a sink that only
buffers what was written since the last ``drain()``; the caller forwards those bytes (to an HTTP upload) and the
buffer never holds more than one chunk.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

BLOCK_BYTES = 128 * 1024  # uncompressed bytes handed to deflate at once


class _ChunkSink:
    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass


class ZipStream:
    """Streaming zip producer. Write members with ``member()``; take produced bytes with ``drain()``."""

    def __init__(self, date_time: tuple[int, ...] = (1980, 1, 1, 0, 0, 0), compresslevel: int = 6) -> None:
        self._date_time = date_time
        self._sink = _ChunkSink()
        self._zip = zipfile.ZipFile(self._sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel)

    @property
    def pending(self) -> int:
        return len(self._sink.buffer)

    def drain(self) -> bytes:
        data = bytes(self._sink.buffer)
        self._sink.buffer.clear()
        return data

    @contextmanager
    def member(self, name: str, *, large: bool = False, deflate: bool = True) -> Iterator[IO[bytes]]:
        """An open member; ``large`` allows more than 4 GiB (adds zip64 fields some old readers dislike)."""
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        with self._zip.open(info, "w", force_zip64=large) as handle:
            yield handle

    def close(self) -> bytes:
        """Finish the archive (central directory) and return the last bytes."""
        self._zip.close()
        return self.drain()


class HashingWriter:
    """Wraps a member handle to count and hash the uncompressed bytes written (for ``meta``).

    Small writes (one record each) are gathered into blocks of ``block_bytes`` before they reach crc32, deflate and
    sha256: a per-call cost paid per block instead of per record; deflate's output does not depend on how its input
    is split, so the bytes are the same. ``finish()`` writes the rest: call it before the member closes and before
    reading ``sha256``.
    """

    def __init__(self, handle: IO[bytes], block_bytes: int = BLOCK_BYTES) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._block_bytes = block_bytes
        self._parts: list[bytes] = []
        self._buffered = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered >= self._block_bytes:
            self.finish()

    def finish(self) -> None:
        if not self._parts:
            return
        block = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts.clear()
        self._buffered = 0
        self.handle.write(block)
        self.sha256.update(block)
        self.size += len(block)
