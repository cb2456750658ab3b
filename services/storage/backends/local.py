"""Object storage on the local filesystem: the default backend, under ``STORAGE_DIR``.

Layout under ``root/objects/<hh>/`` where ``h = sha256(key)`` and ``hh`` its first two hex digits:

- ``<h>.json``: the metadata sidecar (key, size, sha256, content_type, created_at, blob); renaming it into place
  *commits* an object, so readers see either the whole old object or the whole new one, never a mix;
- ``<h>.<token>``: the bytes, one file per version, named by the sidecar;
- ``.tmp-*``: uploads in progress, removed when an upload fails.

Hashed names make any valid key a safe file name (no traversal, no file/directory clash between ``a`` and ``a/b``,
no length limit per path segment); keys are still validated so that they stay portable to S3 and friends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import eventlet
from eventlet import tpool

from services.storage.backends.base import ObjectBackend
from services.storage.types import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    ObjectTooLarge,
    validate_key,
)

TMP_PREFIX = _TMP_PREFIX = ".tmp-"  # parts of uploads in progress (retention.purge_partial_uploads)


def _fsync_path(path: Path) -> None:
    # A file's bytes, or a directory's entries (a rename is only durable once the directory is on disk).
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FSYNCS_AT_ONCE = 16


def _fsync_paths(paths: list[Path]) -> None:
    """fsync files or directories in OS threads, several at once: a waiting fsync blocks neither the eventlet hub
    nor the others, and concurrent ones share the filesystem journal's commits."""
    if len(paths) == 1:
        tpool.execute(_fsync_path, paths[0])
        return
    for _ in eventlet.GreenPool(FSYNCS_AT_ONCE).imap(lambda path: tpool.execute(_fsync_path, path), paths):
        pass


@dataclass
class _Part:
    """An object written as temporary files of its shard, not yet committed."""

    shard: Path
    digest: str
    tmp_blob: Path
    tmp_meta: Path
    blob_name: str
    info: ObjectInfo | None = None

    def discard(self) -> None:
        for path in (self.tmp_blob, self.tmp_meta):
            with contextlib.suppress(OSError):  # never mask the original error
                os.unlink(path)


class _ShardLock:
    """Exclusive flock on a shard directory, held only around the few syscalls of a commit or delete.

    Non-blocking attempts with ``time.sleep`` between them: under eventlet a blocking flock would freeze the hub
    (and deadlock against a green thread of the same process holding the lock); ``time.sleep`` is green there.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd = -1

    def __enter__(self) -> _ShardLock:
        self._fd = os.open(self._directory, os.O_RDONLY)
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing releases the lock


class ChunkIterator:
    """Iterates ``[start, stop)`` of an open file in chunks, and closes the file when exhausted or closed.

    A class rather than a generator: WSGI servers call ``close()`` on the response iterable even when it was never
    started (HEAD, client gone), and an unstarted generator would not run its ``finally``.
    """

    def __init__(self, file: BinaryIO, start: int, stop: int, chunk_size: int = CHUNK_SIZE) -> None:
        self._file = file
        self._remaining = max(0, stop - start)
        self._chunk_size = chunk_size
        file.seek(start)

    def __iter__(self) -> ChunkIterator:
        return self

    def __next__(self) -> bytes:
        if self._remaining <= 0:
            self.close()
            raise StopIteration
        data = self._file.read(min(self._chunk_size, self._remaining))
        if not data:  # the file is shorter than its metadata says: end rather than loop
            self.close()
            raise StopIteration
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


class ObjectReader:
    """One version of an object, opened: ``info`` describes exactly the bytes ``iter_range`` yields."""

    def __init__(self, info: ObjectInfo, file: BinaryIO) -> None:
        self.info = info
        self._file = file

    def iter_range(self, start: int = 0, stop: int | None = None) -> ChunkIterator:
        """Chunks of bytes ``[start, stop)`` (Python slice convention); the iterator owns and closes the file."""
        stop = self.info.size if stop is None else min(stop, self.info.size)
        return ChunkIterator(self._file, start, stop)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBackend(ObjectBackend):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._objects.mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------------------------

    def _shard(self, key: str) -> tuple[Path, str]:
        digest = hashlib.sha256(validate_key(key).encode()).hexdigest()
        return self._objects / digest[:2], digest

    def _read_meta(self, shard: Path, digest: str) -> dict | None:
        try:
            with open(shard / f"{digest}.json", "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    @staticmethod
    def _info(meta: dict) -> ObjectInfo:
        return ObjectInfo(
            key=meta["key"],
            size=meta["size"],
            sha256=meta["sha256"],
            created_at=datetime.fromisoformat(meta["created_at"]),
            content_type=meta.get("content_type") or DEFAULT_CONTENT_TYPE,
        )

    # -- writes --------------------------------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        """Store ``chunks`` under ``key`` (replacing any previous object), in constant memory.

        Nothing becomes visible until every byte is on disk; if ``chunks`` raises (client gone, size limit, the
        worker killed) no object and no temporary file are left behind.
        """
        part = self._write_part(key, chunks, content_type, max_size)
        try:
            _fsync_paths([part.tmp_blob, part.tmp_meta])
        except BaseException:
            part.discard()
            raise
        self._commit(part)
        _fsync_paths([part.shard])
        return part.info

    def put_batch(self, items: Iterable[tuple[str, Iterable[bytes], str | None]], max_size: int | None = None,
                  stored: list[ObjectInfo] | None = None) -> list[ObjectInfo]:
        """Every object written first, then all made durable at once (their fsyncs concurrent: the journal commits
        them together), then committed; nothing is visible before every byte of the batch is on disk, and a failure
        before that leaves nothing behind."""
        stored = [] if stored is None else stored
        parts: list[_Part] = []
        try:
            for key, chunks, content_type in items:
                parts.append(self._write_part(key, chunks, content_type, max_size))
            _fsync_paths([path for part in parts for path in (part.tmp_blob, part.tmp_meta)])
        except BaseException:
            for part in parts:
                part.discard()
            raise
        for part in parts:
            self._commit(part)
            stored.append(part.info)
        _fsync_paths(sorted({part.shard for part in parts}))
        return stored

    def _write_part(self, key: str, chunks: Iterable[bytes], content_type: str | None,
                    max_size: int | None) -> _Part:
        """The bytes and the metadata sidecar as temporary files of the shard (not yet fsynced nor visible)."""
        shard, digest = self._shard(key)
        shard.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        part = _Part(shard, digest, shard / f"{_TMP_PREFIX}{token}", shard / f"{_TMP_PREFIX}{token}.json",
                     f"{digest}.{token}")
        try:
            hasher = hashlib.sha256()
            size = 0
            with open(part.tmp_blob, "xb") as f:
                for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise ObjectTooLarge(f"object larger than {max_size} bytes")
                    hasher.update(chunk)
                    f.write(chunk)
            part.info = ObjectInfo(
                key=key,
                size=size,
                sha256=hasher.hexdigest(),
                created_at=datetime.now(UTC),
                content_type=content_type or DEFAULT_CONTENT_TYPE,
            )
            with open(part.tmp_meta, "x", encoding="utf-8") as f:
                json.dump({**part.info.to_dict(), "blob": part.blob_name}, f)
            return part
        except BaseException:
            # BaseException too: a killed green thread (GreenletExit) or eventlet.Timeout must not leave debris.
            part.discard()
            raise

    def _commit(self, part: _Part) -> None:
        with _ShardLock(part.shard):
            old = self._read_meta(part.shard, part.digest)
            os.rename(part.tmp_blob, part.shard / part.blob_name)
            os.replace(part.tmp_meta, part.shard / f"{part.digest}.json")  # the commit point
            if old and old.get("blob") != part.blob_name:
                # Readers that already opened the old version keep reading it (POSIX unlink semantics).
                _unlink_quietly(part.shard / old["blob"])

    def delete(self, key: str) -> bool:
        shard, digest = self._shard(key)
        if not shard.is_dir():
            return False
        with _ShardLock(shard):
            meta = self._read_meta(shard, digest)
            if meta is None:
                return False
            os.unlink(shard / f"{digest}.json")
            _unlink_quietly(shard / meta["blob"])
            _fsync_paths([shard])
        return True

    # -- reads ---------------------------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        shard, digest = self._shard(key)
        meta = self._read_meta(shard, digest)
        return None if meta is None else self._info(meta)

    def open(self, key: str) -> ObjectReader:
        """Open the current version of ``key``; raise ``ObjectNotFound`` if there is none."""
        shard, digest = self._shard(key)
        for _ in range(3):
            meta = self._read_meta(shard, digest)
            if meta is None:
                break
            try:
                return ObjectReader(self._info(meta), open(shard / meta["blob"], "rb"))
            except FileNotFoundError:
                continue  # replaced or deleted between reading the sidecar and opening the blob: look again
        raise ObjectNotFound(f"no object with key {key!r}")

    def open_range(self, key: str, start: int = 0, stop: int | None = None) -> ChunkIterator:
        """Chunks of bytes ``[start, stop)`` of ``key``; raises ``ObjectNotFound`` at once if it is missing."""
        return self.open(key).iter_range(start, stop)

    # -- housekeeping --------------------------------------------------------------------------------------------

    def purge_temp_files(self, older_than: float = 24 * 3600) -> int:
        """Remove uploads abandoned by a crashed process (a live upload is never this old); returns the count."""
        cutoff = time.time() - older_than
        removed = 0
        for path in self._objects.glob(f"*/{_TMP_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every stored object (for sweepers and tooling), in no particular order."""
        for path in self._objects.glob("*/*.json"):
            if path.name.startswith(_TMP_PREFIX):
                continue
            try:
                with open(path, "rb") as f:
                    yield self._info(json.load(f))
            except FileNotFoundError:
                continue

    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        return None  # it cannot sign: the data plane serves its bytes


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
