"""``shared.storage_client.StorageClient`` against the real storage service (nameko container, RabbitMQ on a throwaway
vhost, HTTP on a free port): links, streamed put and get, the public->internal rewrite, storage's refusals as local
exception types; and the gateway's ``/media/`` entrypoint on it (``worker_factory``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway.service import ApiGatewayService
from shared import object_keys
from shared import storage_client as sc
from shared.config import load_settings
from shared.http import ApiError
from tests.conftest import free_port
from tests.support.storage_service import storage_env, storage_service

SECRET = "storage-client-test-secret-0123456789abcdef"
PUBLIC = "http://storage.public.invalid"  # what links carry: not reachable from here, as behind a proxy


@pytest.fixture(scope="module")
def client(rabbit_vhost_uri, tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("var")
    port = free_port()
    env = storage_env(var_dir, SECRET, STORAGE_URL=PUBLIC, STORAGE_INTERNAL_URL=f"http://127.0.0.1:{port}")
    with storage_service(rabbit_vhost_uri, port, env) as rpc:
        storage = sc.StorageClient(rpc, load_settings())  # storage's variables are set within the block
        yield storage
        storage.close()


def chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_put_streams_to_the_internal_url_and_get_streams_back(client):
    data = bytes(range(256)) * 100
    key = object_keys.upload_key(1, "a.bin")
    stored = client.put(key, chunks(data), content_type="application/octet-stream", owner=1)
    assert (stored["size"], stored["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert client.signed_url(key, method="GET", ttl=60).startswith(PUBLIC + "/objects/")  # the public base
    with client.get(key, ttl=60) as download:
        assert download.size == len(data)
        assert b"".join(download.chunks(4096)) == data
    assert client.stat(key)["sha256"] == stored["sha256"]
    assert client.stored_bytes(1) == len(data)


def test_links_are_rewritten_only_when_they_are_the_data_planes(client):
    internal = client.settings.storage_internal_url
    assert client.internal_url(f"{PUBLIC}/objects/k?x=1") == f"{internal}/objects/k?x=1"
    presigned = "https://bucket.s3.example.org/k?X-Amz-Signature=abc"
    assert client.internal_url(presigned) == presigned and client.data_plane_url(presigned) is None
    assert client.data_plane_url(PUBLIC + ".evil.example/objects/k") is None


def test_storage_refusals_arrive_as_exception_types(client):
    key = object_keys.import_media_key("0" * 8 + "-0000-0000-0000-" + "0" * 12, "images/logo.png")
    with pytest.raises(sc.ObjectNotFound, match=key):
        client.platform_link(key, ttl=60)
    client.put(key, [b"\x89PNG"], content_type="image/png")
    assert client.platform_link(key, ttl=60).startswith(client.settings.storage_internal_url + "/objects/")
    assert client.delete(key) is True
    with pytest.raises(sc.ObjectGone, match="deleted on request"):
        client.signed_url(key, method="GET", ttl=60)
    with pytest.raises(sc.InvalidKey):
        client.stat("../etc/passwd")
    with pytest.raises(sc.UnknownBackend):
        client.update_backend("no-such-backend", {"description": "x"})
    with pytest.raises(sc.InvalidBackendConfig):
        client.create_backend({"storage_backend": "floppy"})


def test_data_plane_failures_are_refused_or_unreachable(client):
    with pytest.raises(sc.StorageRefused) as refused, client.get("exports/never/stored.zip", ttl=60):
        pass
    assert refused.value.status == 404
    gone = replace(client, settings=replace(client.settings, storage_internal_url=f"http://127.0.0.1:{free_port()}"),
                   _http={})
    with pytest.raises(sc.StorageUnreachable):
        gone.put("uploads/x", [b"x"], content_type="text/plain")


def test_retrying_covers_links_only(client):
    seen = []

    def retry(step, name):
        seen.append(name)
        return step()

    retried = client.retrying(retry)
    key = "imports/retry-test/archive.zip"
    retried.put(key, [b"PK"], content_type="application/zip")
    with retried.get(key, ttl=60) as download:
        assert b"".join(download.chunks(10)) == b"PK"
    retried.delete(key)
    assert seen == ["signed_url", "signed_url"]


def _media_request(key: str) -> Request:
    return Request(EnvironBuilder(method="GET", path=f"/media/{key}").get_environ())


def test_gateway_media_route_on_the_client(client):
    """The gateway's ``GET /media/<key>`` with the real client: a redirect, then 404 and 410 as storage says."""
    service = worker_factory(ApiGatewayService, storage=client, config=client.settings)
    key = object_keys.upload_key(2, "b.png")
    client.put(key, [b"\x89PNG"], content_type="image/png")
    response = service.media(_media_request(key), key)
    assert response.status_code == 302 and response.headers["Location"].startswith(PUBLIC + "/objects/" + key)
    missing = object_keys.upload_key(2, "never.png")
    with pytest.raises(ApiError) as info:
        service.media(_media_request(missing), missing)
    assert info.value.status == 404
    client.delete(key)
    with pytest.raises(ApiError) as info:
        service.media(_media_request(key), key)
    assert (info.value.status, info.value.code) == (410, "media_gone")


def test_an_upload_whose_writer_breaks_off_before_the_body_ends_leaves_the_stored_object_as_it_was(client):
    # What a run that lost its lease does (services/exporter/export_job.py): every byte sent, then no end of body.
    class StandDown(Exception):
        pass

    key = object_keys.export_key(7, "0" * 8 + "-1111-2222-3333-" + "4" * 12)
    first = b"the archive of the run that reported" * 500
    stored = client.put(key, chunks(first), content_type="application/zip")

    def stale_body():
        yield from chunks(b"the archive of a stale run" * 500)
        raise StandDown

    with pytest.raises(StandDown):
        client.put(key, stale_body(), content_type="application/zip")
    assert client.stat(key)["sha256"] == stored["sha256"] == hashlib.sha256(first).hexdigest()
    with client.get(key, ttl=60) as download:
        assert b"".join(download.chunks(4096)) == first
