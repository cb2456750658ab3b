"""The real storage service (nameko container, RabbitMQ on a throwaway vhost, HTTP on a free port), driven as a client
would: RPC through a ClusterRpcProxy, bytes through ``requests``."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import tracemalloc
from datetime import datetime
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import eventlet
import pytest
import requests
from nameko.exceptions import RemoteError

from services.storage import data_plane
from shared import object_batch
from shared.config import LINK_KEY_LABEL
from shared.signing import derive_key
from tests.conftest import free_port
from tests.support.storage_service import storage_env, storage_service

SECRET = "storage-test-secret-0123456789abcdef"  # services refuse secrets under 32 bytes
LINK_KEY = derive_key(SECRET, LINK_KEY_LABEL)  # what storage signs its links with
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def storage(rabbit_vhost_uri, tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("var")
    port = free_port()
    # storage keeps its object index and backend records in the database
    env = storage_env(var_dir, SECRET, STORAGE_URL=f"http://127.0.0.1:{port}", SIGNED_URL_TTL="300")
    with storage_service(rabbit_vhost_uri, port, env) as rpc:
        yield {"rpc": rpc, "base": env["STORAGE_URL"], "dir": var_dir / "storage"}


@pytest.fixture
def rpc(storage):
    return storage["rpc"]


def put(storage, key, data, **sign):
    url = storage["rpc"].signed_url(key, method="PUT", **sign)
    response = requests.put(url, data=data, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def tmp_files(storage):
    return [p for p in storage["dir"].rglob(".tmp-*")]


def with_query(url, **changes):
    parts = urlsplit(url)
    args = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    args.update(changes)
    args = {k: v for k, v in args.items() if v is not None}
    return urlunsplit(parts._replace(query=urlencode(args)))


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]["message"]


# -- round trip -------------------------------------------------------------------------------------------------------


def test_chunked_put_then_get_round_trip(storage, rpc):
    key = "events/7/exports/archive.zip"
    data = os.urandom(5 * MiB + 123)

    def body():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    url = rpc.signed_url(key, method="PUT", ttl=60)
    assert url.startswith(storage["base"] + "/objects/events/7/exports/archive.zip?")
    assert set(parse_qs(urlsplit(url).query)) == {"expires", "signature"}

    response = requests.put(url, data=body(), headers={"Content-Type": "application/zip"}, timeout=30)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 201, response.text
    sha = hashlib.sha256(data).hexdigest()
    # where the object lives and when it expires (null: kept): the writer learns its retention
    assert response.json() == {"key": key, "size": len(data), "sha256": sha, "backend": "default", "expires_at": None}

    got = requests.get(rpc.signed_url(key), timeout=30)
    assert got.status_code == 200
    assert got.content == data
    assert hashlib.sha256(got.content).hexdigest() == sha
    assert got.headers["ETag"] == f'"{sha}"'
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Accept-Ranges"] == "bytes"
    assert got.headers["Content-Type"] == "application/zip"
    assert got.headers["Content-Disposition"] == 'attachment; filename=archive.zip'
    assert tmp_files(storage) == []


def test_download_filename_is_signed_and_encoded(storage, rpc):
    put(storage, "media/x.bin", b"abc")
    url = rpc.signed_url("media/x.bin", filename="Événement 2024.zip")
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"_v_nement 2024.zip\"; filename*=UTF-8''%C3%89v%C3%A9nement%202024.zip"
    )
    assert_error(requests.get(with_query(url, filename="other.zip"), timeout=10), 403, "invalid_signature")


def test_upload_is_streamed_not_buffered(storage, rpc):
    """The server writes the body to disk while the client is still sending it.

    The generator pauses after 2 MiB until that much has reached the temporary file; a server that read the whole body
    into memory first would never get there.
    """
    url = rpc.signed_url("stream/probe.bin", method="PUT")
    observed = []

    def body():
        for _ in range(32):
            yield b"s" * (64 * 1024)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            written = sum(p.stat().st_size for p in tmp_files(storage))
            if written >= 2 * MiB - 256 * 1024:  # allow for what is still in flight in socket buffers
                observed.append(written)
                break
            eventlet.sleep(0.01)
        for _ in range(32):
            yield b"t" * (64 * 1024)

    response = requests.put(url, data=body(), timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["size"] == 4 * MiB
    assert observed, "the server did not write any of the body before the client finished sending it"


def test_memory_stays_flat_for_large_transfers(storage, rpc):
    """Client and server share this process: tracemalloc's peak bounds what either side holds at once."""
    key = "stream/large.bin"
    size = 64 * MiB
    chunk = bytes(range(256)) * 256  # 64 KiB
    expected = hashlib.sha256()
    for _ in range(size // len(chunk)):
        expected.update(chunk)
    put_url, get_url = rpc.signed_url(key, method="PUT"), rpc.signed_url(key)

    tracemalloc.start()
    try:
        response = requests.put(put_url, data=(chunk for _ in range(size // len(chunk))), timeout=60)
        assert response.status_code == 201
        received = hashlib.sha256()
        with requests.get(get_url, stream=True, timeout=60) as download:
            for part in download.iter_content(64 * 1024):
                received.update(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.json()["sha256"] == expected.hexdigest() == received.hexdigest()
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB object"


def test_overwrite(storage, rpc):
    put(storage, "over/write", b"first version")
    assert put(storage, "over/write", b"second")["size"] == 6
    assert requests.get(rpc.signed_url("over/write"), timeout=10).content == b"second"


def test_aborted_chunked_upload_leaves_nothing(storage, rpc):
    url = rpc.signed_url("aborted/chunked", method="PUT")

    def body():
        yield b"a" * MiB
        raise RuntimeError("client crashed mid-upload")

    with pytest.raises((RuntimeError, requests.RequestException)):
        requests.put(url, data=body(), timeout=10)
    wait_until(lambda: not tmp_files(storage))
    assert rpc.stat("aborted/chunked") is None


def test_short_content_length_body_is_not_stored(storage, rpc):
    url = urlsplit(rpc.signed_url("aborted/short", method="PUT"))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode() + b"b" * 500
        )
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"incomplete_body" in reply
    wait_until(lambda: not tmp_files(storage))
    assert rpc.stat("aborted/short") is None


# -- batch uploads ----------------------------------------------------------------------------------------------------


def batch(items):
    return object_batch.encode(object_batch.BatchItem(key, ctype, chunks) for key, ctype, chunks in items)


def test_batch_upload_stores_indexes_and_serves_every_object(storage, rpc):
    photo = os.urandom(300 * 1024)
    url = rpc.signed_url("batch/one/", method="POST", retention=True)
    assert url.startswith(storage["base"] + "/batches/batch/one/?")
    response = requests.post(url, data=batch([
        ("batch/one/a.jpg", "image/jpeg", [photo[:1000], photo[1000:]]),
        ("batch/one/sub/b.txt", "text/plain", [b"hello"]),
        ("batch/one/empty", "application/octet-stream", []),
    ]), timeout=30)
    assert response.status_code == 201, response.text
    objects = response.json()["objects"]
    assert [(o["key"], o["size"], o["sha256"]) for o in objects] == [
        ("batch/one/a.jpg", len(photo), hashlib.sha256(photo).hexdigest()),
        ("batch/one/sub/b.txt", 5, hashlib.sha256(b"hello").hexdigest()),
        ("batch/one/empty", 0, hashlib.sha256(b"").hexdigest())]
    assert all(o["backend"] == "default" for o in objects)
    got = requests.get(rpc.signed_url("batch/one/a.jpg", must_exist=True), timeout=10)
    assert got.content == photo and got.headers["Content-Type"] == "image/jpeg"
    assert rpc.stat("batch/one/sub/b.txt")["size"] == 5
    assert not tmp_files(storage)


def test_batch_key_outside_its_prefix_stores_nothing(storage, rpc):
    url = rpc.signed_url("batch/two/", method="POST")
    response = requests.post(url, data=batch([("batch/two/ok.txt", "text/plain", [b"fine"]),
                                              ("batch/other/x.txt", "text/plain", [b"sneaky"])]), timeout=30)
    assert_error(response, 400, "invalid_key")
    assert rpc.stat("batch/two/ok.txt") is None and rpc.stat("batch/other/x.txt") is None
    wait_until(lambda: not tmp_files(storage))


def test_batch_cut_short_stores_nothing(storage, rpc):
    url = rpc.signed_url("batch/three/", method="POST")
    body = b"".join(batch([("batch/three/a.txt", "text/plain", [b"abc"]), ("batch/three/b.txt", "text/plain", [b"d"])]))
    assert_error(requests.post(url, data=body[:-6], timeout=30), 400, "invalid_batch")
    assert rpc.stat("batch/three/a.txt") is None
    wait_until(lambda: not tmp_files(storage))


def test_batch_links_are_bound_to_their_prefix_and_method(storage, rpc):
    url = rpc.signed_url("batch/four/", method="POST")
    other = url.replace("/batches/batch/four/", "/batches/batch/five/")
    assert_error(requests.post(other, data=batch([("batch/five/a", "text/plain", [b"x"])]), timeout=10), 403,
                 "invalid_signature")
    as_put = url.replace("/batches/batch/four/", "/objects/batch/four/a")
    assert_error(requests.put(as_put, data=b"x", timeout=10), 403, "invalid_signature")
    with pytest.raises(RemoteError) as info:
        rpc.signed_url("batch/no-slash", method="POST")
    assert info.value.exc_type == "InvalidKey"


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        eventlet.sleep(0.02)


# -- ranges and HEAD --------------------------------------------------------------------------------------------------

RANGE_DATA = (bytes(range(256)) * 4)[:1000]  # neighbouring bytes differ, so off-by-one errors show


@pytest.fixture(scope="module")
def range_url(storage):
    put(storage, "ranges/obj.bin", RANGE_DATA)
    return storage["rpc"].signed_url("ranges/obj.bin")


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-9", 0, 10),
        ("bytes=100-199", 100, 200),
        ("bytes=-100", 900, 1000),
        ("bytes=990-", 990, 1000),
        ("bytes=995-5000", 995, 1000),
        ("bytes=-5000", 0, 1000),
        ("bytes=999-999", 999, 1000),
    ],
)
def test_single_ranges(range_url, header, start, stop):
    response = requests.get(range_url, headers={"Range": header}, timeout=10)
    assert response.status_code == 206
    assert response.content == RANGE_DATA[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/1000"
    assert response.headers["Content-Length"] == str(stop - start)
    assert response.headers["ETag"] == f'"{hashlib.sha256(RANGE_DATA).hexdigest()}"'


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=-000"])
def test_unsatisfiable_range(range_url, header):
    response = requests.get(range_url, headers={"Range": header}, timeout=10)
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == "bytes */1000"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=oops", "bytes=9-3"])
def test_ranges_we_do_not_serve_fall_back_to_the_whole_object(range_url, header):
    response = requests.get(range_url, headers={"Range": header}, timeout=10)
    assert response.status_code == 200 and response.content == RANGE_DATA


def test_if_range(range_url):
    etag = f'"{hashlib.sha256(RANGE_DATA).hexdigest()}"'
    fresh = requests.get(range_url, headers={"Range": "bytes=0-3", "If-Range": etag}, timeout=10)
    assert fresh.status_code == 206 and fresh.content == RANGE_DATA[:4]
    stale = requests.get(range_url, headers={"Range": "bytes=0-3", "If-Range": '"other"'}, timeout=10)
    assert stale.status_code == 200 and stale.content == RANGE_DATA


def test_range_on_empty_object(storage, rpc):
    put(storage, "ranges/empty", b"")
    url = rpc.signed_url("ranges/empty")
    assert requests.get(url, timeout=10).content == b""
    response = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
    assert_error(response, 416, "range_not_satisfiable")


def test_head(range_url):
    response = requests.head(range_url, timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "1000"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{hashlib.sha256(RANGE_DATA).hexdigest()}"'
    partial = requests.head(range_url, headers={"Range": "bytes=-100"}, timeout=10)
    assert partial.status_code == 206
    assert partial.headers["Content-Range"] == "bytes 900-999/1000"
    assert partial.headers["Content-Length"] == "100"


def test_client_disconnect_mid_download_is_harmless(storage, range_url, rpc):
    put(storage, "ranges/big", b"d" * (8 * MiB))
    url = urlsplit(rpc.signed_url("ranges/big"))
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    # the service keeps serving
    assert requests.get(range_url, headers={"Range": "bytes=0-0"}, timeout=10).status_code == 206


# -- signatures -------------------------------------------------------------------------------------------------------


def flip_one_char(signature):
    return signature[:-1] + ("0" if signature[-1] != "0" else "1")


def test_tampered_links_are_refused(storage, range_url):
    args = parse_qs(urlsplit(range_url).query)
    signature, expires = args["signature"][0], int(args["expires"][0])
    other_key = range_url.replace("/ranges/obj.bin?", "/ranges/other.bin?")
    put(storage, "ranges/other.bin", b"secret")
    tampered = [
        with_query(range_url, signature=flip_one_char(signature)),
        with_query(range_url, signature=signature[:-1]),
        with_query(range_url, signature=None),
        with_query(range_url, expires=str(expires + 1)),
        with_query(range_url, expires="tomorrow"),
        with_query(range_url, expires=None),
        with_query(range_url, filename="evil.html"),
        other_key,
        range_url.split("?")[0],
    ]
    for url in tampered:
        message = assert_error(requests.get(url, timeout=10), 403, "invalid_signature")
        assert "invalid" in message
        assert requests.head(url, timeout=10).status_code == 403


def test_expired_links_say_so(storage, rpc):
    put(storage, "expiry/obj", b"x")
    past = data_plane.signed_url(storage["base"], LINK_KEY, "expiry/obj", ttl=10, now=time.time() - 60)
    message = assert_error(requests.get(past, timeout=10), 403, "link_expired")
    assert message == "This link has expired. Request a new download link."

    short = rpc.signed_url("expiry/obj", ttl=1)
    assert requests.get(short, timeout=10).status_code == 200
    eventlet.sleep(1.1)
    assert_error(requests.get(short, timeout=10), 403, "link_expired")
    # an expired link that was also tampered with is reported as tampered
    expired_tampered = with_query(past, signature=flip_one_char(parse_qs(urlsplit(past).query)["signature"][0]))
    assert_error(requests.get(expired_tampered, timeout=10), 403, "invalid_signature")


def test_signature_is_bound_to_the_method(storage, rpc):
    put(storage, "method/obj", b"original")
    get_url = rpc.signed_url("method/obj")
    assert_error(requests.put(get_url, data=b"overwritten", timeout=10), 403, "invalid_signature")
    assert_error(requests.get(rpc.signed_url("method/obj", method="PUT"), timeout=10), 403, "invalid_signature")
    assert requests.get(get_url, timeout=10).content == b"original"


def test_signed_url_rejects_bad_arguments(rpc):
    for kwargs in ({"key": "../etc/passwd"}, {"key": "a b"}, {"key": "k", "method": "DELETE"}, {"key": "k", "ttl": 0}):
        with pytest.raises(RemoteError) as info:
            rpc.signed_url(**kwargs)
        assert info.value.exc_type in ("InvalidKey", "ValueError")


def test_get_links_for_objects_that_must_exist(storage, rpc):
    # Services ask with must_exist (the gateway's /media/, the exporter reading platform media): no link to nothing.
    with pytest.raises(RemoteError) as info:
        rpc.signed_url("never/stored.png", must_exist=True)
    assert info.value.exc_type == "ObjectNotFound"
    assert rpc.signed_url("never/stored.png").startswith(storage["base"])  # without it: a link that will 404
    put(storage, "exists/photo.png", b"\x89PNG\r\n\x1a\n")
    url = rpc.signed_url("exists/photo.png", must_exist=True, data_plane_only=True)
    assert url.startswith(storage["base"] + "/objects/exists/photo.png?")
    assert requests.get(url, timeout=10).content == b"\x89PNG\r\n\x1a\n"


# -- RPC control plane ------------------------------------------------------------------------------------------------


def test_stat_and_delete(storage, rpc):
    data = b"metadata please"
    put(storage, "rpc/obj.txt", data)
    stat = rpc.stat("rpc/obj.txt")
    assert json.loads(json.dumps(stat)) == stat  # plain JSON types only
    assert stat["key"] == "rpc/obj.txt"
    assert stat["size"] == len(data)
    assert stat["sha256"] == hashlib.sha256(data).hexdigest()
    assert isinstance(stat["created_at"], str) and datetime.fromisoformat(stat["created_at"]).tzinfo is not None

    url = rpc.signed_url("rpc/obj.txt")
    assert rpc.delete("rpc/obj.txt") is True
    assert rpc.stat("rpc/obj.txt") is None
    assert rpc.delete("rpc/obj.txt") is False
    # The object index remembers it: a link to a deleted object says so (410), not just "not found".
    message = assert_error(requests.get(url, timeout=10), 410, "gone")
    assert "deleted on request" in message
    assert requests.head(url, timeout=10).status_code == 410
    with pytest.raises(RemoteError) as gone:
        rpc.signed_url("rpc/obj.txt")
    assert gone.value.exc_type == "ObjectGone"
    with pytest.raises(RemoteError) as info:
        rpc.stat("/absolute")
    assert info.value.exc_type == "InvalidKey"


def test_health(storage, rpc):
    health = rpc.health()
    assert health["status"] == "ok" and health["service"] == "storage" and health["backend"] == "local"
    assert health["free_bytes"] > 0
    over_http = requests.get(storage["base"] + "/health", timeout=10)
    assert over_http.status_code == 200 and over_http.json()["status"] == "ok"


def test_unknown_routes_answer_json(storage):
    assert_error(requests.get(storage["base"] + "/nowhere", timeout=10), 404, "not_found")
    response = requests.delete(storage["base"] + "/objects/x", timeout=10)
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
