"""S3 (AWS, MinIO, SeaweedFS, ...) through boto3.

Writes: an object that fits in one part goes up with one ``PutObject`` carrying its sha256 as user metadata. A larger
one is streamed as a multipart upload (``part_size`` parts, memory bounded by about two parts) to a staging key under
``<prefix>.uploads/``; only when it is complete, and its sha256 known, is it copied server-side to the real key with
that metadata and the staging object removed. So the real key only ever holds whole objects that carry their
sha256, and a failed upload leaves the previous object untouched (the multipart upload is aborted). A crash between
the steps leaves debris only under ``.uploads/`` (expire it with a bucket lifecycle rule, with
``AbortIncompleteMultipartUpload`` for uploads cut short).

Import this module only after ``eventlet.monkey_patch()`` (docs/architecture.md fact 7).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from services.storage.backends.base import (
    ChunkStream,
    Incoming,
    RemoteBackend,
    empty_stream,
    format_created_at,
    parse_created_at,
    positive_ttl,
)
from services.storage.types import (
    BUCKET_MISSING,
    CHUNK_SIZE,
    CREDENTIALS,
    DEFAULT_CONTENT_TYPE,
    UNREACHABLE,
    BackendError,
    ObjectInfo,
    ObjectNotFound,
    content_disposition,
    validate_key,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3's limits: parts of 5 MiB..5 GiB (the last may be smaller), at most 10,000 of them, CopyObject up to 5 GiB.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_SINGLE_COPY = 5 * GiB
STAGING_PREFIX = ".uploads/"
_META_SHA256 = "sha256"
_META_CREATED = "created-at"
# S3 error codes that mean the credentials are wrong (a 403 without a code means the same).
_CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken")


@dataclass(frozen=True)
class S3Config:
    bucket: str
    endpoint_url: str | None = None  # None: AWS; MinIO/SeaweedFS: their URL
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    # Where clients reach S3 when that differs from endpoint_url (containers): SigV4 signs the host, so presigned
    # URLs must be made for the public one.
    public_endpoint_url: str | None = None
    prefix: str = ""  # prepended to every key, e.g. "portability/"
    part_size: int = 8 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    addressing_style: str | None = None  # default: "path" with a custom endpoint, else botocore's choice


class S3Backend(RemoteBackend):
    name = "s3"
    # Class attributes so a test can exercise the >5 GiB copy path with small objects.
    max_single_copy = MAX_SINGLE_COPY
    copy_part_size = 512 * MiB

    def __init__(self, config: S3Config) -> None:
        if config.part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes")
        self.config = config
        self.bucket = config.bucket
        self._prefix = config.prefix
        self._client = self._make_client(config.endpoint_url)
        # Presigning is local (no request): a second client that only knows the public host.
        self._signer = self._make_client(config.public_endpoint_url) if config.public_endpoint_url else self._client

    def _make_client(self, endpoint_url: str | None) -> Any:
        c = self.config
        style = c.addressing_style or ("path" if endpoint_url else None)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=c.region,
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=c.secret_access_key,
            config=Config(
                signature_version="s3v4",
                connect_timeout=c.connect_timeout,
                read_timeout=c.read_timeout,
                retries={"max_attempts": c.max_attempts, "mode": "standard"},
                s3={"addressing_style": style} if style else None,
                # Checksums only where S3 requires them: SeaweedFS and older MinIO reject some of the newer ones.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _error(self, operation: str, key: str, exc: Exception) -> BackendError:
        # ClientError carries S3's own code and message (never our credentials); transport errors only their type.
        reason = None
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{err.get('Code', 'error')} (HTTP {status})"
            if err.get("Code") == "NoSuchBucket":
                reason = BUCKET_MISSING
            elif err.get("Code") in _CREDENTIAL_CODES or status == 403:
                reason = CREDENTIALS
        else:
            detail = type(exc).__name__
            if isinstance(exc, (BotoConnectionError, HTTPClientError)):
                reason = UNREACHABLE
        return BackendError(f"s3: {operation} of {key!r} in bucket {self.bucket!r} failed: {detail}", reason)

    @staticmethod
    def _code(exc: ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    @staticmethod
    def _status(exc: ClientError) -> int | None:
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")

    # -- writes ------------------------------------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None,
                   max_size: int | None = None) -> ObjectInfo:
        name = self._name(key)
        reader = Incoming(key, chunks, content_type, max_size)
        first = reader.read_part(self.config.part_size)
        try:
            if reader.at_eof():
                info = reader.info()
                self._client.put_object(Bucket=self.bucket, Key=name, Body=first, ContentType=reader.content_type,
                                        Metadata=self._metadata(info))
                return info
            staging = f"{self._prefix}{STAGING_PREFIX}{uuid.uuid4().hex}"
            pending = [first]
            del first  # the upload loop owns the part now, so it is freed as soon as it is sent
            self._multipart_upload(staging, pending, reader)
            info = reader.info()
            try:
                self._copy(staging, name, info)
            finally:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self._client.delete_object(Bucket=self.bucket, Key=staging)
            return info
        except (ClientError, BotoCoreError) as exc:
            reader.raise_source_error()
            raise self._error("upload", key, exc) from None

    @staticmethod
    def _metadata(info: ObjectInfo) -> dict[str, str]:
        return {_META_SHA256: info.sha256, _META_CREATED: format_created_at(info.created_at)}

    def _multipart_upload(self, staging: str, pending: list[bytearray], reader: Incoming) -> None:
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=staging)["UploadId"]
        try:
            parts = []
            data = pending.pop()
            number = 1
            while data:
                if number > MAX_PARTS:
                    raise BackendError(
                        f"s3: object larger than {MAX_PARTS} parts of {self.config.part_size} bytes; raise part_size"
                    )
                etag = self._client.upload_part(
                    Bucket=self.bucket, Key=staging, UploadId=upload_id, PartNumber=number, Body=data
                )["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})
                number += 1
                data = bytearray()  # drop the sent part before reading the next one: memory stays at one part
                data = reader.read_part(self.config.part_size)
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=staging, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # BaseException too: a killed green thread must not leave parts billed forever.
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=staging, UploadId=upload_id)
            except Exception:  # never mask the original error
                log.warning("s3: could not abort multipart upload of %s", staging, exc_info=True)
            raise

    def _copy(self, source: str, target: str, info: ObjectInfo) -> None:
        """Server-side copy that sets the final metadata; atomic at ``target`` (readers see old or new)."""
        source_ref = {"Bucket": self.bucket, "Key": source}
        if info.size <= self.max_single_copy:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource=source_ref,
                MetadataDirective="REPLACE",
                ContentType=info.content_type,
                Metadata=self._metadata(info),
            )
            return
        # Beyond CopyObject's 5 GiB limit: a multipart copy, part by part, still server-side.
        part_size = max(self.copy_part_size, -(-info.size // MAX_PARTS))
        upload_id = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=target, ContentType=info.content_type, Metadata=self._metadata(info)
        )["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, info.size, part_size), start=1):
                last = min(offset + part_size, info.size) - 1
                result = self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source_ref,
                    CopySourceRange=f"bytes={offset}-{last}",
                )
                parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload_id)
            raise

    def delete(self, key: str) -> bool:
        name = self._name(key)
        # S3's DeleteObject answers 204 whether or not the key existed: ask first to report it.
        existed = self.stat(key) is not None
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from None
        return existed

    # -- reads -------------------------------------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if self._status(exc) == 404 or self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("stat", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("stat", key, exc) from None
        meta = head.get("Metadata") or {}
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            # Empty for objects written by something else than this backend (no sha256 recorded).
            sha256=meta.get(_META_SHA256, ""),
            created_at=parse_created_at(meta.get(_META_CREATED), head["LastModified"]),
            content_type=head.get("ContentType") or DEFAULT_CONTENT_TYPE,
        )

    def _fetch_range(self, key: str, start: int, stop: int | None, rng: str | None) -> Iterator[bytes]:
        name = self._name(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if rng:
            params["Range"] = rng
        try:
            response = self._client.get_object(**params)
        except ClientError as exc:
            code = self._code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"no object with key {key!r}") from None
            if code == "InvalidRange" or self._status(exc) == 416:
                return empty_stream()  # start at or past the end: nothing to send, like the local backend
            raise self._error("download", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("download", key, exc) from None
        body = response["Body"]
        return ChunkStream(body.iter_chunks(CHUNK_SIZE), close=body.close, what=f"s3: download of {key!r}")

    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        name = self._name(key)
        ttl = positive_ttl(ttl)
        try:
            return self._signer.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": name,
                    "ResponseContentDisposition": content_disposition(filename or key),
                },
                ExpiresIn=int(ttl),
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("presign", key, exc) from None

    # -- housekeeping ------------------------------------------------------------------------------------------------

    def check_container(self) -> None:
        """``BackendError`` (reason ``BUCKET_MISSING``) if the bucket does not exist. Some servers (SeaweedFS)
        create a bucket on the first PUT into it, so a put alone would not tell. A 403 is left to the put: a
        write-only policy may lack ListBucket, which HeadBucket needs."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if self._status(exc) == 404 or self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise BackendError(f"s3: bucket {self.bucket!r} does not exist", BUCKET_MISSING) from None
            if self._status(exc) != 403:
                raise self._error("head bucket", "", exc) from None
        except BotoCoreError as exc:
            raise self._error("head bucket", "", exc) from None

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (local stacks and tests; production buckets are provisioned)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if self._status(exc) != 404:
                raise self._error("head bucket", "", exc) from None
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as exc2:
                raise self._error("create bucket", "", exc2) from None
