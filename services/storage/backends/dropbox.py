"""Dropbox through the official SDK (app key + app secret + refresh token; the SDK refreshes access tokens).

Layout under ``root`` (a folder of the app's space): the bytes at ``<root>/objects/<key>`` and a JSON sidecar at
``<root>/meta/<key>.json`` with size, sha256, content type, creation time and the ``rev`` of the bytes it describes.
Dropbox has no custom metadata for files, so the sidecar is the commit point: it is written after the bytes, and
``stat`` only reports an object whose sidecar names the current ``rev`` (a half-finished overwrite, or a file
dropped there by hand, reads as absent). Keys that differ only in case collide: Dropbox paths are case-insensitive.

Large objects go up through an upload session (start / append_v2 / finish) in ``chunk_size`` pieces; downloads ask
``files/download`` for a ``Range``. Dropbox cannot presign a plain GET with our filename, so ``presigned_get`` is
``None`` and the storage data plane proxies the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import dropbox
import requests
from dropbox import exceptions as dbx_exc
from dropbox import files as dbx_files
from dropbox.session import HOST_API, HOST_CONTENT

from services.storage.backends.base import (
    Incoming,
    RemoteBackend,
    empty_stream,
    ranged_body,
    sidecar_info,
)
from services.storage.types import (
    CREDENTIALS,
    UNREACHABLE,
    BackendError,
    ObjectInfo,
    ObjectNotFound,
    validate_key,
)

MiB = 1024 * 1024
BLOCK = 4 * MiB  # Dropbox recommends (and concurrent sessions require) multiples of 4 MiB per call
MAX_CALL_BYTES = 150 * MiB  # one upload call carries at most 150 MiB
_SIDECAR_LIMIT = 64 * 1024
_TRANSPORT_ERRORS = (requests.RequestException, OSError)


@dataclass(frozen=True)
class DropboxConfig:
    app_key: str
    app_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    root: str = "/portability"
    api_host: str | None = None  # default api.dropboxapi.com (the fake in tests: 127.0.0.1:PORT)
    content_host: str | None = None  # default content.dropboxapi.com
    ca_certs: str | None = None  # a CA bundle to trust instead of the system's (the fake's self-signed CA)
    chunk_size: int = 8 * MiB
    timeout: float = 60.0  # per socket operation (the SDK's meaning)
    max_retries: int = 3  # on 5xx and 429


class _Client(dropbox.Dropbox):
    """The SDK client with its hosts set per instance.

    The SDK reads custom hosts only from environment variables at import time; the per-instance host map and the
    token endpoint's host are overridden here instead, so two backends (or a test fake) can coexist in one process.
    """

    def use_hosts(self, api_host: str | None, content_host: str | None) -> None:
        if api_host:
            self._host_map[HOST_API] = api_host
        if content_host:
            self._host_map[HOST_CONTENT] = content_host

    def refresh_access_token(self, host: str | None = None, scope: list[str] | None = None) -> None:
        super().refresh_access_token(host=host or self._host_map[HOST_API], scope=scope)


class DropboxBackend(RemoteBackend):
    name = "dropbox"

    def __init__(self, config: DropboxConfig) -> None:
        if config.chunk_size <= 0 or config.chunk_size % BLOCK or config.chunk_size > MAX_CALL_BYTES:
            raise ValueError(f"Dropbox chunk_size must be a multiple of {BLOCK} bytes up to {MAX_CALL_BYTES}")
        root = "/" + config.root.strip("/")
        if root == "/":
            raise ValueError("Dropbox root must be a folder, not the app's top level")
        self.config = config
        self._root = root
        if config.ca_certs:
            session = dropbox.create_session(ca_certs=config.ca_certs)
            # requests lets REQUESTS_CA_BUNDLE (set on many machines) override session.verify unless trust_env
            # is off; only then is our CA the one that counts.
            session.trust_env = False
        else:
            session = dropbox.create_session()
        self._dbx = _Client(
            app_key=config.app_key,
            app_secret=config.app_secret,
            oauth2_refresh_token=config.refresh_token,
            session=session,
            timeout=config.timeout,
            max_retries_on_error=config.max_retries,
            max_retries_on_rate_limit=config.max_retries,
            user_agent="portability-storage",
        )
        self._dbx.use_hosts(config.api_host, config.content_host)

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _data_path(self, key: str) -> str:
        return f"{self._root}/objects/{validate_key(key)}"

    def _meta_path(self, key: str) -> str:
        return f"{self._root}/meta/{validate_key(key)}.json"

    def _error(self, operation: str, key: str, exc: BaseException) -> BackendError:
        # SDK errors can carry response bodies; only their kind is reported (never tokens or secrets).
        reason = None
        if isinstance(exc, dbx_exc.ApiError):
            detail = f"{exc.error!s}"[:200]
        elif isinstance(exc, dbx_exc.AuthError):
            detail = "authentication failed (check app key, app secret and refresh token)"
            reason = CREDENTIALS
        elif isinstance(exc, dbx_exc.BadInputError):
            detail = "request rejected (BadInputError; for a token refresh: check app key and secret)"
        elif isinstance(exc, dbx_exc.HttpError):
            detail = f"HTTP {exc.status_code}"
        else:
            detail = type(exc).__name__
            if isinstance(exc, requests.ConnectionError):
                reason = UNREACHABLE
        return BackendError(f"dropbox: {operation} of {key!r} failed: {detail}", reason)

    @staticmethod
    def _is_not_found(exc: dbx_exc.ApiError) -> bool:
        lookup = None
        err = exc.error
        for attr in ("get_path", "get_path_lookup"):
            check = attr.replace("get_", "is_")
            if hasattr(err, check) and getattr(err, check)():
                lookup = getattr(err, attr)()
                break
        return lookup is not None and (lookup.is_not_found() or lookup.is_not_file())

    def _upload_small(self, path: str, data: bytes) -> dbx_files.FileMetadata:
        return self._dbx.files_upload(data, path, mode=dbx_files.WriteMode.overwrite, mute=True)

    # -- writes ------------------------------------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        data_path = self._data_path(key)
        reader = Incoming(key, chunks, content_type, max_size)
        size = self.config.chunk_size
        try:
            part = reader.read(size)  # the SDK wants bytes (it refuses streams: it may resend a request)
            if reader.at_eof():
                meta = self._upload_small(data_path, part)
            else:
                session_id = self._dbx.files_upload_session_start(part).session_id
                offset = len(part)
                part = b""
                while True:
                    part = reader.read(size)
                    cursor = dbx_files.UploadSessionCursor(session_id=session_id, offset=offset)
                    if reader.at_eof():
                        commit = dbx_files.CommitInfo(path=data_path, mode=dbx_files.WriteMode.overwrite, mute=True)
                        meta = self._dbx.files_upload_session_finish(part, cursor, commit)
                        break
                    self._dbx.files_upload_session_append_v2(part, cursor)
                    offset += len(part)
                    part = b""
            del part
            if meta.size != reader.size:
                raise BackendError(f"dropbox: upload of {key!r} stored {meta.size} bytes, sent {reader.size}")
            info = reader.info()
            sidecar = {**info.to_dict(), "rev": meta.rev}
            self._upload_small(self._meta_path(key), json.dumps(sidecar).encode())
            return info
        except (dbx_exc.DropboxException, *_TRANSPORT_ERRORS) as exc:
            # An unfinished upload session needs no cleanup: Dropbox drops it after a week, never as a file.
            reader.raise_source_error()
            raise self._error("upload", key, exc) from None

    def delete(self, key: str) -> bool:
        existed = False
        # The sidecar first: once it is gone the object is uncommitted, even if removing the bytes then fails.
        for path in (self._meta_path(key), self._data_path(key)):
            try:
                self._dbx.files_delete_v2(path)
                existed = True
            except dbx_exc.ApiError as exc:
                if not self._is_not_found(exc):
                    raise self._error("delete", key, exc) from None
            except (dbx_exc.DropboxException, *_TRANSPORT_ERRORS) as exc:
                raise self._error("delete", key, exc) from None
        return existed

    # -- reads -------------------------------------------------------------------------------------------------------

    def _sidecar(self, key: str) -> dict[str, Any] | None:
        try:
            _, response = self._dbx.files_download(self._meta_path(key))
        except dbx_exc.ApiError as exc:
            if self._is_not_found(exc):
                return None
            raise
        try:
            body = response.raw.read(_SIDECAR_LIMIT + 1, decode_content=True)
        finally:
            response.close()
        try:
            return json.loads(body) if len(body) <= _SIDECAR_LIMIT else None
        except ValueError:
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            sidecar = self._sidecar(key)
            if sidecar is None:
                return None
            try:
                current = self._dbx.files_get_metadata(self._data_path(key))
            except dbx_exc.ApiError as exc:
                if self._is_not_found(exc):
                    return None
                raise
        except (dbx_exc.DropboxException, *_TRANSPORT_ERRORS) as exc:
            raise self._error("stat", key, exc) from None
        if not isinstance(current, dbx_files.FileMetadata) or current.rev != sidecar.get("rev"):
            return None  # bytes replaced or removed without their sidecar: not a committed object
        if sidecar.get("key") != key:
            return None  # a key differing only in case took this (case-insensitive) path
        return sidecar_info(key, int(current.size), sidecar, current.server_modified.replace(tzinfo=UTC))

    def _fetch_range(self, key: str, start: int, stop: int | None, rng: str | None) -> Iterator[bytes] | None:
        path = self._data_path(key)
        try:
            # files_download has no Range parameter; the SDK's generic request() takes extra headers.
            _, response = self._dbx.request(
                dbx_files.download,
                "files",
                dbx_files.DownloadArg(path=path),
                None,
                extra_headers={"Range": rng} if rng else None,
            )
        except dbx_exc.ApiError as exc:
            if self._is_not_found(exc):
                raise ObjectNotFound(f"no object with key {key!r}") from None
            raise self._error("download", key, exc) from None
        except dbx_exc.HttpError as exc:
            if exc.status_code == 416:
                return empty_stream()  # start at or past the end
            raise self._error("download", key, exc) from None
        except (dbx_exc.DropboxException, *_TRANSPORT_ERRORS) as exc:
            raise self._error("download", key, exc) from None
        return ranged_body(response, rng, start, lambda reason: BackendError(
            f"dropbox: download of {key!r} failed: {reason}"), what=f"dropbox: download of {key!r}")

    # presigned_get: none. files/get_temporary_link exists, but it cannot set Content-Disposition and lives 4 hours
    # whatever we ask.
