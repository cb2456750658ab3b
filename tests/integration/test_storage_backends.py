"""One contract suite, run unchanged over every object backend. local: the filesystem; s3: SeaweedFS (real SigV4
checks); gcs: fake-gcs-server; dropbox and seafile: the HTTP fakes in ``tests/support/fakes`` (HTTPS with a
throwaway CA for Dropbox, as its SDK only speaks HTTPS). Each server starts once per module on 127.0.0.1 free
ports (``tests/support/storage_servers.py``); a server that cannot run here skips its backend with the reason.
Backend- specific checks (tampered S3 presigned URLs, aborted multipart uploads, ...) follow the suite.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from services.storage.backends.base import ObjectBackend
from services.storage.types import BackendError, InvalidKey, ObjectInfo, ObjectNotFound, ObjectTooLarge
from tests.conftest import free_port
from tests.support.storage_servers import (
    ServerUnavailable,
    start_dropbox_fake,
    start_fake_gcs,
    start_seafile_fake,
    start_seaweedfs,
)

MiB = 1024 * 1024
BIG_CHUNKS = 50  # a 50 MiB object, produced 1 MiB at a time
# What put_stream may hold at once, measured with tracemalloc: well under half of the 50 MiB object.
MAX_PEAK = 20 * MiB
BACKENDS = ["local", "s3", "gcs", "dropbox", "seafile"]


@dataclass
class Case:
    name: str
    backend: ObjectBackend
    # Same backend with a wrong credential (None where there is none to get wrong), and the secrets that must
    # never appear in an error message.
    with_bad_credentials: Callable[[], ObjectBackend] | None = None
    unreachable: Callable[[], ObjectBackend] | None = None
    secrets: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


# -- servers and backends, once per module -------------------------------------------------------------------------


def _start(tmp_path_factory, name: str, starter: Callable[..., object], *args: str) -> tuple[Path, object]:
    """A work directory and the server ``starter(workdir, *args)`` runs there; skips when it cannot run here."""
    workdir = tmp_path_factory.mktemp(name)
    try:
        return workdir, starter(workdir, *args)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def local_case(tmp_path_factory) -> Iterator[Case]:
    from services.storage.backends.local import LocalBackend

    workdir = tmp_path_factory.mktemp("local")
    yield Case("local", LocalBackend(workdir))
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_case(tmp_path_factory) -> Iterator[Case]:
    from services.storage.backends.s3 import S3Backend, S3Config

    workdir, server = _start(tmp_path_factory, "seaweedfs", start_seaweedfs)
    config = S3Config(
        bucket="portability-test",
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        prefix="exports/",
    )
    backend = S3Backend(config)
    try:
        yield Case(
            "s3",
            backend,
            with_bad_credentials=lambda: S3Backend(
                S3Config(**{**config.__dict__, "secret_access_key": "wrong-" + server.secret_key[:10]})
            ),
            unreachable=lambda: S3Backend(
                S3Config(**{**config.__dict__, "endpoint_url": f"http://127.0.0.1:{free_port()}", "max_attempts": 1})
            ),
            secrets=(server.secret_key, "wrong-" + server.secret_key[:10]),
            extra={"server": server},
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # 50 MiB objects: do not keep them in pytest's tmp dirs


def _service_account_file(directory: Path) -> Path:
    """A service-account key made here: lets the client sign URLs offline (it never asks Google for tokens)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / "signer.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "portability-test",
                "private_key_id": uuid.uuid4().hex,
                "private_key": pem,
                "client_email": "signer@portability-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "http://127.0.0.1:9/token",  # never used: signing is local
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def gcs_case(tmp_path_factory) -> Iterator[Case]:
    from services.storage.backends.gcs import GcsBackend, GcsConfig

    workdir, server = _start(tmp_path_factory, "gcs", start_fake_gcs)
    config = GcsConfig(
        bucket="portability-test",
        anonymous=True,
        api_endpoint=server.endpoint,
        signing_credentials_file=str(_service_account_file(workdir)),
        prefix="exports/",
    )
    backend = GcsBackend(config)
    try:
        backend.ensure_bucket()
        yield Case(
            "gcs",
            backend,
            # fake-gcs-server checks no credentials at all: nothing to get wrong.
            unreachable=lambda: GcsBackend(
                GcsConfig(
                    **{
                        **config.__dict__,
                        "api_endpoint": f"http://127.0.0.1:{free_port()}",
                        "retry_deadline": 1.0,
                    }
                )
            ),
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def dropbox_case(tmp_path_factory) -> Iterator[Case]:
    from services.storage.backends.dropbox import DropboxBackend, DropboxConfig

    app_key, app_secret, refresh = "app-" + uuid.uuid4().hex[:8], "secret-" + uuid.uuid4().hex, "rt-" + uuid.uuid4().hex
    workdir, server = _start(tmp_path_factory, "dropbox", start_dropbox_fake, app_key, app_secret, refresh)
    hosts = server.settings["hosts"]
    config = DropboxConfig(
        app_key=app_key,
        app_secret=app_secret,
        refresh_token=refresh,
        api_host=hosts["api"],
        content_host=hosts["content"],
        ca_certs=server.settings["ca_cert"],
    )
    try:
        yield Case(
            "dropbox",
            DropboxBackend(config),
            with_bad_credentials=lambda: DropboxBackend(DropboxConfig(**{**config.__dict__, "app_secret": "nope"})),
            unreachable=lambda: DropboxBackend(
                DropboxConfig(**{**config.__dict__, "api_host": f"127.0.0.1:{free_port()}"})
            ),
            secrets=(app_secret, refresh),
            extra={"server": server},
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def seafile_case(tmp_path_factory) -> Iterator[Case]:
    from services.storage.backends.seafile import SeafileBackend, SeafileConfig

    token, repo_id = uuid.uuid4().hex, str(uuid.uuid4())
    workdir, server = _start(tmp_path_factory, "seafile", start_seafile_fake, token, repo_id)
    config = SeafileConfig(server_url=server.base_url, token=token, repo_id=repo_id)
    try:
        yield Case(
            "seafile",
            SeafileBackend(config),
            with_bad_credentials=lambda: SeafileBackend(SeafileConfig(**{**config.__dict__, "token": "bad" + token})),
            unreachable=lambda: SeafileBackend(
                SeafileConfig(**{**config.__dict__, "server_url": f"http://127.0.0.1:{free_port()}"})
            ),
            secrets=(token, "bad" + token),
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=BACKENDS)
def case(request) -> Case:
    return request.getfixturevalue(f"{request.param}_case")


@pytest.fixture
def backend(case) -> ObjectBackend:
    return case.backend


def unique(name: str) -> str:
    # The backends live for the whole module: every test writes under its own prefix.
    return f"t-{uuid.uuid4().hex[:12]}/{name}"


# -- data ----------------------------------------------------------------------------------------------------------


def chunk(seed: int, index: int) -> bytes:
    """1 MiB of deterministic noise: any slice of the object can be recomputed without keeping the object."""
    return random.Random(seed * 1_000_003 + index).randbytes(MiB)


def expected_slice(seed: int, start: int, stop: int) -> bytes:
    out = bytearray()
    for index in range(start // MiB, (stop - 1) // MiB + 1):
        data = chunk(seed, index)
        lo = max(start - index * MiB, 0)
        hi = min(stop - index * MiB, MiB)
        out += data[lo:hi]
    return bytes(out)


def read(case: Case, key: str, start: int = 0, stop: int | None = None, url: str | None = None) -> bytes:
    """Bytes ``[start, stop)``: through the presigned URL when the backend gives one, else through open_range."""
    if url is None:
        return b"".join(case.backend.open_range(key, start, stop))
    headers = {}
    if start or stop is not None:
        headers["Range"] = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == (206 if headers else 200), response.text[:300]
    return response.content


def sha256_of_download(case: Case, key: str, url: str | None) -> str:
    hasher = hashlib.sha256()
    if url is None:
        stream = case.backend.open_range(key)
        try:
            for piece in stream:
                assert len(piece) <= 8 * MiB  # streamed, not one buffer
                hasher.update(piece)
        finally:
            stream.close()
    else:
        with requests.get(url, stream=True, timeout=60) as response:
            assert response.status_code == 200
            for piece in response.iter_content(MiB):
                hasher.update(piece)
    return hasher.hexdigest()


# -- the contract ----------------------------------------------------------------------------------------------------


def test_large_object_streams_in_bounded_memory_and_reads_back(case):
    backend = case.backend
    key = unique("export.zip")
    seed = random.randrange(1 << 30)
    hasher = hashlib.sha256()

    def produce() -> Iterator[bytes]:
        for index in range(BIG_CHUNKS):
            data = chunk(seed, index)
            hasher.update(data)
            yield data

    started = time.monotonic()
    tracemalloc.start()
    try:
        info = backend.put_stream(key, produce(), content_type="application/zip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    upload_seconds = time.monotonic() - started
    size = BIG_CHUNKS * MiB
    assert (info.key, info.size, info.sha256, info.content_type) == (key, size, hasher.hexdigest(), "application/zip")
    assert peak < MAX_PEAK, f"{case.name}: put_stream peaked at {peak / MiB:.1f} MiB for a {size // MiB} MiB object"
    print(f"\n{case.name}: 50 MiB put in {upload_seconds:.2f}s, tracemalloc peak {peak / MiB:.1f} MiB")

    assert backend.stat(key) == info

    url = backend.presigned_get(key, ttl=120, filename="event 1.zip")
    if case.name in ("s3", "gcs"):
        assert url and url.startswith("http://127.0.0.1:")
    else:
        assert url is None  # the storage data plane proxies these through open_range
    # Ranges across chunk and part boundaries (parts are 8 MiB on S3/GCS/Dropbox), and the tail.
    for start, stop in [(0, 100), (MiB - 10, MiB + 10), (8 * MiB - 3, 8 * MiB + 5), (size - 7, None), (12345, 4 * MiB)]:
        assert read(case, key, start, stop, url) == expected_slice(seed, start, size if stop is None else stop)
    assert sha256_of_download(case, key, url) == info.sha256


def test_overwrite_replaces_the_object(backend):
    key = unique("report.json")
    first = backend.put_stream(key, [b'{"v": 1}' * 1000], content_type="application/json")
    second = backend.put_stream(key, [b"v2"], content_type="text/plain")
    assert backend.stat(key) == second != first
    assert (second.size, second.content_type) == (2, "text/plain")
    assert b"".join(backend.open_range(key)) == b"v2"


def test_delete_then_stat_is_none(backend):
    key = unique("gone.bin")
    backend.put_stream(key, [b"abc"])
    assert backend.delete(key) is True
    assert backend.stat(key) is None
    assert backend.delete(key) is False
    with pytest.raises(ObjectNotFound):
        backend.open_range(key)


def test_missing_object(backend):
    key = unique("never-written")
    assert backend.stat(key) is None
    assert backend.delete(key) is False
    with pytest.raises(ObjectNotFound):
        backend.open_range(key)
    with pytest.raises(ObjectNotFound):
        backend.open_range(key, 0, 0)
    with pytest.raises(ObjectNotFound):
        backend.open(key)


def test_range_edges_follow_slice_convention(backend):
    key = unique("edges.bin")
    data = bytes(range(256)) * 4
    backend.put_stream(key, [data[:100], b"", data[100:]])
    for start, stop in [
        (0, None),
        (10, 20),
        (1000, None),
        (5, 10**9),
        (1023, 1024),
        (1024, None),
        (2000, None),
        (7, 7),
    ]:
        assert b"".join(backend.open_range(key, start, stop)) == data[start:stop], (start, stop)
    with backend.open(key) as reader:
        assert reader.info.size == len(data)
        assert b"".join(reader.iter_range(1000)) == data[1000:]


def test_empty_object_and_default_content_type(backend):
    key = unique("empty")
    info = backend.put_stream(key, iter(()))
    assert (info.size, info.sha256, info.content_type) == (
        0,
        hashlib.sha256(b"").hexdigest(),
        "application/octet-stream",
    )
    assert backend.stat(key) == info
    assert b"".join(backend.open_range(key)) == b""


def test_created_at_is_aware_and_round_trips_as_json(backend):
    info = backend.put_stream(unique("t.txt"), [b"x"])
    assert info.created_at.tzinfo is not None
    assert ObjectInfo(**{**info.to_dict(), "created_at": info.created_at}) == info
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()


def test_max_size_refuses_and_keeps_the_previous_object(backend):
    key = unique("limited.bin")
    old = backend.put_stream(key, [b"old"])
    with pytest.raises(ObjectTooLarge):
        backend.put_stream(key, (b"x" * MiB for _ in range(12)), max_size=10 * MiB)
    assert backend.stat(key) == old
    assert b"".join(backend.open_range(key)) == b"old"


def test_failing_stream_leaves_the_previous_object(backend):
    """A client that goes away mid-upload (the generator raises) must not replace or truncate the object."""
    key = unique("interrupted.bin")
    old = backend.put_stream(key, [b"the old bytes"])

    def dies_after_two_parts() -> Iterator[bytes]:
        for _ in range(17):  # past two 8 MiB parts, so multipart/resumable/session uploads are under way
            yield b"y" * MiB
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        backend.put_stream(key, dies_after_two_parts())
    assert backend.stat(key) == old
    assert b"".join(backend.open_range(key)) == b"the old bytes"

    fresh = unique("never-finished.bin")
    with pytest.raises(ConnectionResetError):
        backend.put_stream(fresh, dies_after_two_parts())
    assert backend.stat(fresh) is None


def test_invalid_keys_are_refused_before_any_request(backend):
    for key in ("../escape", "/absolute", "a//b", "", "a/./b", "sp ace"):
        with pytest.raises(InvalidKey):
            backend.put_stream(key, [b"x"])
        with pytest.raises(InvalidKey):
            backend.stat(key)


def test_wrong_credentials_give_a_clear_error_without_secrets(case):
    if case.with_bad_credentials is None:
        pytest.skip(f"{case.name}: no credentials to get wrong")
    bad = case.with_bad_credentials()
    with pytest.raises(BackendError) as caught:
        bad.stat(unique("x"))
    message = str(caught.value)
    assert message.startswith(f"{case.name}: stat of ")
    for secret in case.secrets:
        assert secret not in message and secret not in repr(caught.value)


def test_unreachable_backend_fails_fast_with_backend_error(case):
    if case.unreachable is None:
        pytest.skip(f"{case.name}: has no remote end")
    backend = case.unreachable()
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        backend.stat(unique("x"))
    assert time.monotonic() - started < 15
    assert str(caught.value).startswith(f"{case.name}: stat of ")
    with pytest.raises(BackendError):
        backend.put_stream(unique("y"), [b"data"])


# -- S3 on SeaweedFS: what only a real server shows -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(s3_case) -> Case:
    return s3_case


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_s3_presigned_url_is_checked_by_the_server(s3):
    key = unique("signed.zip")
    s3.backend.put_stream(key, [b"signed bytes"], content_type="application/zip")
    url = s3.backend.presigned_get(key, ttl=60, filename="event1.zip")
    ok = requests.get(url, timeout=10)
    assert ok.status_code == 200 and ok.content == b"signed bytes"
    assert ok.headers["Content-Disposition"] == "attachment; filename=event1.zip"

    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = [
        _with_query(url, **{"X-Amz-Signature": flipped}),
        _with_query(url, **{"X-Amz-Expires": "604800"}),
        _with_query(url, **{"response-content-disposition": "attachment; filename=other.exe"}),
        url.replace(key, unique("other.zip").split("/")[0] + "/signed.zip"),
    ]
    for bad in tampered:
        assert requests.get(bad, timeout=10).status_code == 403, bad


def test_s3_failed_upload_leaves_no_multipart_upload_nor_staging_object(s3):
    backend = s3.backend
    key = unique("aborted.bin")

    def dies() -> Iterator[bytes]:
        for _ in range(20):
            yield b"z" * MiB
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        backend.put_stream(key, dies())
    client = backend._client
    uploads = client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", [])
    assert uploads == []
    staged = client.list_objects_v2(Bucket=backend.bucket, Prefix="exports/.uploads/").get("Contents", [])
    assert staged == []


def test_s3_multipart_copy_beyond_the_single_copy_limit(s3, monkeypatch):
    """Objects over 5 GiB are committed by a multipart copy; shown here with the limit lowered to 6 MiB."""
    backend = s3.backend
    monkeypatch.setattr(backend, "max_single_copy", 6 * MiB)
    monkeypatch.setattr(backend, "copy_part_size", 5 * MiB)
    key = unique("huge.bin")
    seed = 7
    info = backend.put_stream(key, (chunk(seed, i) for i in range(13)))
    assert backend.stat(key) == info
    assert read(s3, key, 5 * MiB - 2, 5 * MiB + 2) == expected_slice(seed, 5 * MiB - 2, 5 * MiB + 2)
    assert sha256_of_download(s3, key, None) == info.sha256


def test_s3_object_written_elsewhere_has_empty_sha256(s3):
    backend = s3.backend
    key = unique("foreign.txt")
    backend._client.put_object(Bucket=backend.bucket, Key="exports/" + key, Body=b"from another tool")
    info = backend.stat(key)
    assert info is not None and (info.size, info.sha256) == (17, "")


# -- GCS on fake-gcs-server ------------------------------------------------------------------------------------------


def test_gcs_signed_url_is_v4_and_served_with_range(gcs_case):
    """fake-gcs-server serves signed URLs without verifying their signature: only the URL's shape is shown here."""
    backend = gcs_case.backend
    key = unique("signed.zip")
    backend.put_stream(key, [b"0123456789"])
    url = backend.presigned_get(key, ttl=60, filename="event1.zip")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"] and query["X-Goog-Expires"] == ["60"]
    assert query["response-content-disposition"] == ["attachment; filename=event1.zip"]
    response = requests.get(url, headers={"Range": "bytes=2-4"}, timeout=10)
    assert (response.status_code, response.content) == (206, b"234")


def test_gcs_without_signing_credentials_returns_none(gcs_case):
    from services.storage.backends.gcs import GcsBackend, GcsConfig

    config = {**gcs_case.backend.config.__dict__, "signing_credentials_file": None}
    assert GcsBackend(GcsConfig(**config)).presigned_get(unique("k"), 60) is None


# -- sidecar backends: the sidecar is the commit point ---------------------------------------------------------------


def test_dropbox_paths_are_case_insensitive_so_keys_differing_in_case_collide(dropbox_case):
    backend = dropbox_case.backend
    prefix = unique("")
    backend.put_stream(prefix + "Report.txt", [b"upper"])
    backend.put_stream(prefix + "report.txt", [b"lower"])
    # Dropbox keeps one file: the first key's sidecar no longer matches its rev, so it reads as absent.
    assert backend.stat(prefix + "Report.txt") is None
    assert backend.stat(prefix + "report.txt").size == 5
