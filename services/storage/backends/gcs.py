"""Google Cloud Storage through google-cloud-storage (JSON API), also usable against fake-gcs-server.

Writes mirror the S3 backend: an object that fits in one chunk goes up in one request with its sha256 as custom
metadata; a larger one is streamed with a resumable upload (``chunk_size`` chunks, no retries of a chunk since the
stream cannot rewind) to a staging name under ``<prefix>.uploads/``, then rewritten server-side to the real name
with its metadata (a metadata-only rewrite when location and storage class match) and the staging object deleted.

Signed URLs (V4) need credentials that can sign: a service-account key (``credentials_file`` or
``signing_credentials_file``). With others (anonymous, metadata-server tokens) ``presigned_get`` returns ``None`` and
the storage data plane proxies the bytes. fake-gcs-server serves signed URLs but does not verify their signatures.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import google.auth
import google.auth.credentials
import requests
from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from services.storage.backends.base import (
    Incoming,
    RemoteBackend,
    format_created_at,
    parse_created_at,
    positive_ttl,
    ranged_body,
)
from services.storage.types import (
    BUCKET_MISSING,
    DEFAULT_CONTENT_TYPE,
    BackendError,
    ObjectInfo,
    content_disposition,
    validate_key,
)

MiB = 1024 * 1024
CHUNK_QUANTUM = 256 * 1024  # resumable upload chunks must be multiples of 256 KiB
STAGING_PREFIX = ".uploads/"
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_META_SHA256 = "sha256"
_META_CREATED = "created-at"
_ERRORS = (gexc.GoogleAPIError, GoogleAuthError, requests.RequestException, OSError)


@dataclass(frozen=True)
class GcsConfig:
    bucket: str
    project: str | None = None
    credentials_file: str | None = None  # service-account JSON; None: application default credentials
    anonymous: bool = False  # emulators (fake-gcs-server)
    api_endpoint: str | None = None  # None: Google; fake-gcs-server: http://127.0.0.1:PORT
    public_endpoint: str | None = None  # host of signed URLs; default: api_endpoint, else Google's
    signing_credentials_file: str | None = None  # a key that can sign when the API credentials cannot
    # A service-account key given inline (backend records) instead of credentials_file; with ``anonymous`` it only
    # signs URLs.
    credentials_json: str | None = field(default=None, repr=False)
    prefix: str = ""
    chunk_size: int = 8 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Total time the library may spend retrying one idempotent call (its default is 120 s per call).
    retry_deadline: float = 30.0


class _Prepended:
    """A read/tell file of ``head`` followed by the rest of ``reader`` (the chunk read to decide the upload type)."""

    def __init__(self, head: bytearray, reader: Incoming) -> None:
        self._head: bytearray | None = head
        self._reader = reader
        self._position = 0
        self._last: bytearray | None = None

    def read(self, n: int = -1) -> bytes | bytearray:
        # bytearrays are handed on as they are (requests sends them): one copy of a chunk in memory, not two.
        # The library keeps the previous chunk alive (the last response references its request body) while it
        # asks for the next one; that chunk is sent and never re-read (no retries, the stream cannot seek), so
        # emptying it here keeps memory at one chunk instead of two.
        if self._last is not None:
            self._last.clear()
            self._last = None
        data: bytes | bytearray
        if self._head:
            if n < 0 or n >= len(self._head):
                data, self._head = self._head, None
            else:
                data = bytes(self._head[:n])
                del self._head[:n]
        else:
            data = self._reader.read_part(n)
        if isinstance(data, bytearray):
            self._last = data
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position


class GcsBackend(RemoteBackend):
    name = "gcs"

    def __init__(self, config: GcsConfig) -> None:
        if config.chunk_size <= 0 or config.chunk_size % CHUNK_QUANTUM:
            raise ValueError(f"GCS chunk_size must be a positive multiple of {CHUNK_QUANTUM} bytes")
        self.config = config
        self._prefix = config.prefix
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._retry = DEFAULT_RETRY.with_timeout(config.retry_deadline)
        credentials = self._credentials(config)
        self._session = AuthorizedSession(credentials)
        options = {"api_endpoint": config.api_endpoint} if config.api_endpoint else None
        self._client = storage.Client(
            project=config.project or "portability",  # only used to create buckets
            credentials=credentials,
            _http=self._session,
            client_options=options,
        )
        self._bucket = self._client.bucket(config.bucket)
        self._api_base = (config.api_endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._public = (config.public_endpoint or config.api_endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if config.signing_credentials_file:
            self._signer: Any = service_account.Credentials.from_service_account_file(config.signing_credentials_file)
        elif config.anonymous and config.credentials_json:
            self._signer = service_account.Credentials.from_service_account_info(json.loads(config.credentials_json))
        elif isinstance(credentials, google.auth.credentials.Signing) and not config.anonymous:
            self._signer = credentials
        else:
            self._signer = None

    @staticmethod
    def _credentials(config: GcsConfig) -> google.auth.credentials.Credentials:
        if config.anonymous:
            return google.auth.credentials.AnonymousCredentials()
        if config.credentials_json:
            return service_account.Credentials.from_service_account_info(
                json.loads(config.credentials_json), scopes=_SCOPES
            )
        if config.credentials_file:
            return service_account.Credentials.from_service_account_file(config.credentials_file, scopes=_SCOPES)
        credentials, _ = google.auth.default(scopes=_SCOPES)
        return credentials

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _error(self, operation: str, key: str, exc: BaseException) -> BackendError:
        code = getattr(exc, "code", None)
        detail = f"{type(exc).__name__} (HTTP {code})" if isinstance(code, int) else type(exc).__name__
        return BackendError(f"gcs: {operation} of {key!r} in bucket {self.config.bucket!r} failed: {detail}")

    @staticmethod
    def _metadata(info: ObjectInfo) -> dict[str, str]:
        return {_META_SHA256: info.sha256, _META_CREATED: format_created_at(info.created_at)}

    # -- writes ------------------------------------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        name = self._name(key)
        reader = Incoming(key, chunks, content_type, max_size)
        first = reader.read_part(self.config.chunk_size)
        try:
            if reader.at_eof():
                info = reader.info()
                blob = self._bucket.blob(name)
                blob.metadata = self._metadata(info)
                blob.upload_from_string(
                    bytes(first), content_type=reader.content_type, timeout=self._timeout, retry=self._retry
                )
                return info
            staging = self._bucket.blob(
                f"{self._prefix}{STAGING_PREFIX}{uuid.uuid4().hex}", chunk_size=self.config.chunk_size
            )
            stream = _Prepended(first, reader)
            del first
            try:
                # size=None + chunk_size: a resumable upload that learns the total when the stream ends.
                staging.upload_from_file(stream, size=None, content_type=reader.content_type, timeout=self._timeout,
                                         retry=None, checksum=None)
                info = reader.info()
                target = self._bucket.blob(name)
                target.metadata = self._metadata(info)
                target.content_type = reader.content_type
                token = None
                while True:  # rewrite answers in steps when it must copy data
                    token, _, _ = target.rewrite(staging, token=token, timeout=self._timeout, retry=self._retry)
                    if token is None:
                        break
            finally:
                with contextlib.suppress(*_ERRORS):
                    staging.delete(timeout=self._timeout, retry=self._retry)
            return info
        except _ERRORS as exc:
            reader.raise_source_error()
            raise self._error("upload", key, exc) from None

    def delete(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._bucket.delete_blob(name, timeout=self._timeout, retry=self._retry)
        except gexc.NotFound:
            return False
        except _ERRORS as exc:
            raise self._error("delete", key, exc) from None
        return True

    # -- reads -------------------------------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        try:
            blob = self._bucket.get_blob(name, timeout=self._timeout, retry=self._retry)
        except _ERRORS as exc:
            raise self._error("stat", key, exc) from None
        if blob is None:
            return None
        meta = blob.metadata or {}
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            sha256=meta.get(_META_SHA256, ""),  # empty for objects written by something else
            created_at=parse_created_at(meta.get(_META_CREATED), blob.time_created or datetime.now(UTC)),
            content_type=blob.content_type or DEFAULT_CONTENT_TYPE,
        )

    def _fetch_range(self, key: str, start: int, stop: int | None, rng: str | None) -> Iterator[bytes] | None:
        name = self._name(key)
        # One streamed media GET (the client library's download helpers buffer whole ranges in memory).
        url = f"{self._api_base}/storage/v1/b/{quote(self.config.bucket, safe='')}/o/{quote(name, safe='')}"
        headers = {"Range": rng} if rng else {}
        try:
            response = self._session.get(
                url, params={"alt": "media"}, headers=headers, stream=True, timeout=self._timeout
            )
        except _ERRORS as exc:
            raise self._error("download", key, exc) from None
        return ranged_body(response, rng, start, lambda reason: BackendError(
            f"gcs: download of {key!r} failed: {reason}"), what=f"gcs: download of {key!r}")

    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        name = self._name(key)
        ttl = positive_ttl(ttl)
        if self._signer is None:
            return None
        try:
            return self._bucket.blob(name).generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=int(ttl)),
                method="GET",
                response_disposition=content_disposition(filename or key),
                credentials=self._signer,
                api_access_endpoint=self._public,
            )
        except (GoogleAuthError, ValueError, AttributeError) as exc:
            raise self._error("presign", key, exc) from None

    # -- housekeeping ------------------------------------------------------------------------------------------------

    def check_container(self) -> None:
        """``BackendError`` (reason ``BUCKET_MISSING``) if the bucket does not exist."""
        try:
            missing = self._client.lookup_bucket(self.config.bucket, timeout=self._timeout, retry=self._retry) is None
        except _ERRORS as exc:
            raise self._error("look up bucket", "", exc) from None
        if missing:
            raise BackendError(f"gcs: bucket {self.config.bucket!r} does not exist", BUCKET_MISSING)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (local stacks and tests; production buckets are provisioned)."""
        try:
            if self._client.lookup_bucket(self.config.bucket, timeout=self._timeout, retry=self._retry) is None:
                self._client.create_bucket(self.config.bucket, timeout=self._timeout, retry=self._retry)
        except _ERRORS as exc:
            raise self._error("create bucket", "", exc) from None
