"""Seafile through its Web API (api2) with an account token and a library (repo) id.

Layout in the library, under ``root``: the bytes at ``<root>/objects/<key>`` and a JSON sidecar at
``<root>/meta/<key>.json`` with size, sha256, content type, creation time and the Seafile file ``id`` of the bytes it
describes (Seafile keeps no custom metadata on files). The sidecar is written after the bytes and is the commit
point: ``stat`` only reports an object whose sidecar names the file's current id.

Uploads are one streamed multipart POST (chunked transfer encoding) to an upload link with ``replace=1`` and
``relative_path`` creating the folders; memory stays at one chunk. (Seafile's resumable ``Content-Range`` upload
needs the total size in advance, which a stream does not know.) Downloads go through a download link with
``Range``. Seafile's links cannot carry our filename and expiry, so ``presigned_get`` is ``None``: the storage data
plane proxies the bytes.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from services.storage.backends.base import (
    ChunkStream,
    Incoming,
    RemoteBackend,
    range_header,
    ranged_body,
    sidecar_info,
)
from services.storage.types import (
    BackendError,
    ObjectInfo,
    StorageError,
    validate_key,
)

MiB = 1024 * 1024
_SIDECAR_LIMIT = 64 * 1024


@dataclass(frozen=True)
class SeafileConfig:
    server_url: str  # e.g. https://seafile.example.org
    token: str = field(repr=False)
    repo_id: str
    root: str = "/portability"
    ca_certs: str | None = None  # a CA bundle to trust instead of the system's
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    upload_piece: int = 1 * MiB  # size of the pieces streamed into the upload body


class _Failure(Exception):
    """Carries the caller's exception out of the request body generator."""


class SeafileBackend(RemoteBackend):
    name = "seafile"

    def __init__(self, config: SeafileConfig) -> None:
        root = "/" + config.root.strip("/")
        if root == "/":
            raise ValueError("Seafile root must be a folder, not the library's top level")
        self.config = config
        self._root = root
        self._api = config.server_url.rstrip("/") + f"/api2/repos/{config.repo_id}"
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._session = requests.Session()
        if config.ca_certs:
            self._session.verify = config.ca_certs
            self._session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
        self._auth = {"Authorization": f"Token {config.token}", "Accept": "application/json"}

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _data_path(self, key: str) -> str:
        return f"{self._root}/objects/{validate_key(key)}"

    def _meta_path(self, key: str) -> str:
        return f"{self._root}/meta/{validate_key(key)}.json"

    def _fail(self, operation: str, key: str, detail: str) -> BackendError:
        # Never the URL: upload and download links carry access tokens.
        return BackendError(f"seafile: {operation} of {key!r} failed: {detail}")

    def _api_call(self, method: str, endpoint: str, operation: str, key: str, **kwargs: Any) -> requests.Response:
        try:
            response = self._session.request(
                method, f"{self._api}/{endpoint}", headers=self._auth, timeout=self._timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise self._fail(operation, key, type(exc).__name__) from None
        if response.status_code in (401, 403):
            raise self._fail(operation, key, f"HTTP {response.status_code} (check the token and library access)")
        return response

    def _link(self, endpoint: str, path: str, operation: str, key: str) -> str | None:
        """An upload or download link (a JSON string); ``None`` on 404."""
        response = self._api_call("GET", endpoint, operation, key, params={"p": path})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(operation, key, f"HTTP {response.status_code}")
        try:
            link = response.json()
        except ValueError:
            link = None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise self._fail(operation, key, "the server did not answer with a link")
        return link

    def _detail(self, path: str, operation: str, key: str) -> dict[str, Any] | None:
        response = self._api_call("GET", "file/detail/", operation, key, params={"p": path})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(operation, key, f"HTTP {response.status_code}")
        detail = response.json()
        return detail if isinstance(detail, dict) and detail.get("type", "file") == "file" else None

    def _upload(self, path: str, pieces: Iterable[bytes], operation: str, key: str) -> dict[str, Any]:
        """Stream ``pieces`` as the file at ``path`` (replacing it); returns the server's ``{name, id, size}``."""
        link = self._link("upload-link/", "/", operation, key)
        if link is None:
            raise self._fail(operation, key, "library not found")
        directory, name = posixpath.split(path)
        boundary = uuid.uuid4().hex
        failure: list[BaseException] = []

        def body() -> Iterator[bytes]:
            fields = {"parent_dir": "/", "relative_path": directory.lstrip("/"), "replace": "1"}
            for field_name, value in fields.items():
                yield (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"\r\n\r\n{value}\r\n'
                ).encode()
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            try:
                yield from pieces
            except BaseException as exc:
                # Dropping out mid-body aborts the request, so the server never stores a truncated file.
                failure.append(exc)
                raise _Failure() from None
            yield f"\r\n--{boundary}--\r\n".encode()

        try:
            response = self._session.post(
                link,
                params={"ret-json": "1"},
                data=body(),
                headers={**self._auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=self._timeout,
            )
        except BaseException as exc:
            if failure:
                raise failure[0] from None
            if isinstance(exc, requests.RequestException | OSError):
                raise self._fail(operation, key, type(exc).__name__) from None
            raise
        if failure:
            raise failure[0]
        if response.status_code != 200:
            raise self._fail(operation, key, f"HTTP {response.status_code}")
        try:
            result = response.json()[0]
            assert isinstance(result["id"], str)
        except (ValueError, LookupError, TypeError, AssertionError):
            raise self._fail(operation, key, "unexpected upload response") from None
        return result

    # -- writes ------------------------------------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        data_path, meta_path = self._data_path(key), self._meta_path(key)
        reader = Incoming(key, chunks, content_type, max_size)

        def pieces() -> Iterator[bytes]:
            while piece := reader.read(self.config.upload_piece):
                yield piece

        result = self._upload(data_path, pieces(), "upload", key)
        if int(result.get("size", -1)) != reader.size:
            raise self._fail("upload", key, f"stored {result.get('size')} bytes, sent {reader.size}")
        info = reader.info()
        sidecar = json.dumps({**info.to_dict(), "file_id": result["id"]}).encode()
        self._upload(meta_path, [sidecar], "upload", key)
        return info

    def delete(self, key: str) -> bool:
        existed = False
        # The sidecar first: once it is gone the object is uncommitted, even if removing the bytes then fails.
        for path in (self._meta_path(key), self._data_path(key)):
            if self._detail(path, "delete", key) is None:
                continue
            response = self._api_call("DELETE", "file/", "delete", key, params={"p": path})
            if response.status_code not in (200, 404):
                raise self._fail("delete", key, f"HTTP {response.status_code}")
            existed = True
        return existed

    # -- reads -------------------------------------------------------------------------------------------------------

    def _download(self, path: str, start: int, stop: int | None, operation: str, key: str) -> ChunkStream | None:
        """A stream of ``[start, stop)`` of the file at ``path``; ``None`` if there is no such file."""
        link = self._link("file/", path, operation, key)
        if link is None:
            return None
        rng = range_header(start, stop)
        try:
            response = self._session.get(
                link, headers={"Range": rng} if rng else {}, stream=True, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise self._fail(operation, key, type(exc).__name__) from None
        return ranged_body(response, rng, start, lambda reason: self._fail(operation, key, reason),
                           what=f"seafile: {operation} of {key!r}")

    def stat(self, key: str) -> ObjectInfo | None:
        detail = self._detail(self._data_path(key), "stat", key)
        if detail is None:
            return None
        stream = self._download(self._meta_path(key), 0, _SIDECAR_LIMIT + 1, "stat", key)
        if stream is None:
            return None
        try:
            raw = b"".join(stream)
            sidecar = json.loads(raw) if len(raw) <= _SIDECAR_LIMIT else None
        except (ValueError, StorageError):
            sidecar = None
        finally:
            stream.close()
        if not isinstance(sidecar, dict) or sidecar.get("file_id") != detail.get("id") or sidecar.get("key") != key:
            return None  # bytes replaced or removed without their sidecar: not a committed object
        mtime = detail.get("mtime")
        fallback = datetime.fromtimestamp(mtime, UTC) if isinstance(mtime, int | float) else datetime.now(UTC)
        return sidecar_info(key, int(detail.get("size", sidecar.get("size", 0))), sidecar, fallback)

    def _exists(self, key: str) -> bool:
        return self._detail(self._data_path(key), "download", key) is not None

    def _fetch_range(self, key: str, start: int, stop: int | None, rng: str | None) -> Iterator[bytes] | None:
        return self._download(self._data_path(key), start, stop, "download", key)
