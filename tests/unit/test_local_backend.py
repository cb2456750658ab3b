from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import tracemalloc
from datetime import UTC, datetime

import pytest

from services.storage.backends.local import LocalBackend
from services.storage.types import InvalidKey, ObjectInfo, ObjectNotFound, ObjectTooLarge, validate_key
from shared.object_keys import MAX_KEY_LENGTH


@pytest.fixture
def backend(tmp_path) -> LocalBackend:
    return LocalBackend(tmp_path / "store")


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_stat_read_round_trip(backend):
    data = os.urandom(200_000)
    info = backend.put_stream("events/1/export.zip", [data[:1000], b"", data[1000:]], content_type="application/zip")
    assert isinstance(info, ObjectInfo)
    assert (info.key, info.size, info.sha256) == ("events/1/export.zip", len(data), hashlib.sha256(data).hexdigest())
    assert info.content_type == "application/zip"
    assert info.created_at.tzinfo is not None and abs((datetime.now(UTC) - info.created_at).total_seconds()) < 60
    assert backend.stat("events/1/export.zip") == info
    assert b"".join(backend.open_range("events/1/export.zip")) == data
    assert b"".join(backend.open_range("events/1/export.zip", 10, 20)) == data[10:20]
    assert b"".join(backend.open_range("events/1/export.zip", 199_990)) == data[199_990:]
    assert b"".join(backend.open_range("events/1/export.zip", 5, 10**9)) == data[5:]


def test_to_dict_is_plain_json(backend):
    info = backend.put_stream("k", [b"abc"])
    d = info.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["size"] == 3 and d["content_type"] == "application/octet-stream"
    assert datetime.fromisoformat(d["created_at"]) == info.created_at


def test_empty_object(backend):
    info = backend.put_stream("empty", iter(()))
    assert info.size == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    assert b"".join(backend.open_range("empty")) == b""


def test_chunks_are_bounded(backend):
    backend.put_stream("big", [b"x" * (1024 * 1024)] * 3)
    sizes = [len(c) for c in backend.open_range("big")]
    assert sum(sizes) == 3 * 1024 * 1024 and max(sizes) <= 64 * 1024


def test_overwrite_replaces_atomically_and_leaves_one_version(backend):
    backend.put_stream("k", [b"old" * 1000])
    reader = backend.open("k")  # a download in progress keeps its version
    new = backend.put_stream("k", [b"new!"])
    assert backend.stat("k") == new
    assert b"".join(backend.open_range("k")) == b"new!"
    assert b"".join(reader.iter_range()) == b"old" * 1000
    assert len(files_under(backend.root)) == 2  # one sidecar + one blob


def test_missing_objects(backend):
    assert backend.stat("nope") is None
    assert backend.delete("nope") is False
    with pytest.raises(ObjectNotFound):
        backend.open("nope")
    with pytest.raises(ObjectNotFound):
        backend.open_range("nope", 0, 10)


def test_delete(backend):
    backend.put_stream("a/b", [b"1"])
    backend.put_stream("a", [b"2"])  # "a" and "a/b" coexist, as in S3
    assert backend.delete("a/b") is True
    assert backend.stat("a/b") is None and backend.delete("a/b") is False
    assert b"".join(backend.open_range("a")) == b"2"
    assert backend.delete("a") is True
    assert files_under(backend.root) == []


def test_failed_upload_leaves_nothing(backend):
    def chunks():
        yield b"x" * 100_000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        backend.put_stream("k", chunks())
    assert backend.stat("k") is None
    assert files_under(backend.root) == []


def test_failed_overwrite_keeps_the_previous_object(backend):
    old = backend.put_stream("k", [b"keep me"])

    def chunks():
        yield b"partial"
        raise ConnectionError

    with pytest.raises(ConnectionError):
        backend.put_stream("k", chunks())
    assert backend.stat("k") == old
    assert b"".join(backend.open_range("k")) == b"keep me"
    assert len(files_under(backend.root)) == 2


def test_max_size(backend):
    with pytest.raises(ObjectTooLarge):
        backend.put_stream("k", [b"x" * 600, b"x" * 600], max_size=1000)
    assert files_under(backend.root) == []
    assert backend.put_stream("k", [b"x" * 1000], max_size=1000).size == 1000


def test_nothing_visible_until_complete(backend):
    seen = []

    def chunks():
        yield b"first"
        seen.append(backend.stat("k"))
        yield b"second"

    backend.put_stream("k", chunks())
    assert seen == [None]


def test_memory_does_not_grow_with_object_size(backend):
    chunk = b"z" * (64 * 1024)
    total = 48 * 1024 * 1024

    tracemalloc.start()
    try:
        backend.put_stream("big", (chunk for _ in range(total // len(chunk))))
        read = sum(len(c) for c in backend.open_range("big"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == total
    assert peak < 2 * 1024 * 1024, peak


def test_concurrent_overwrites_leave_exactly_one_consistent_version(backend):
    def write(n):
        def chunks():
            for _ in range(5):
                yield str(n).encode() * 2_000
                time.sleep(0)  # green under the suite's monkey patch: lets the writers interleave

        backend.put_stream("hot", chunks())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = backend.stat("hot")
    data = b"".join(backend.open_range("hot"))
    assert hashlib.sha256(data).hexdigest() == info.sha256 and len(data) == info.size
    assert len(files_under(backend.root)) == 2


def test_purge_temp_files(backend, tmp_path):
    backend.put_stream("k", [b"1"])
    shard = next((backend.root / "objects").iterdir())
    stale, fresh = shard / ".tmp-stale", shard / ".tmp-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (0, 0))
    assert backend.purge_temp_files(older_than=3600) == 1
    assert not stale.exists() and fresh.exists()
    assert [i.key for i in backend.iter_objects()] == ["k"]


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "events/12/exports/event-12_2024.01.01.zip",
        "x~y/.hidden",
        "a" * MAX_KEY_LENGTH,
        "A-Z_0.9",
    ],
)
def test_valid_keys(backend, key):
    assert validate_key(key) == key
    backend.put_stream(key, [b"ok"])
    assert backend.stat(key).key == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a/..",
        "..",
        "a..b",
        "./a",
        "a/./b",
        ".",
        "a\\b",
        "a\x00b",
        "a//b",
        "a/",
        "with space",
        "ünïcode",
        "a?b",
        "a%2fb",
        "a" * (MAX_KEY_LENGTH + 1),
        None,
        42,
    ],
)
def test_invalid_keys_are_refused_everywhere(backend, key):
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(InvalidKey):
        backend.put_stream(key, [b"x"])
    with pytest.raises(InvalidKey):
        backend.stat(key)
    with pytest.raises(InvalidKey):
        backend.delete(key)
    with pytest.raises(InvalidKey):
        backend.open_range(key, 0, 1)
    assert files_under(backend.root) == []
