"""The storage service's vocabulary, below everything else in it: object metadata, key validation, the errors.

Every backend (``backends/``), the data plane, the object index and the registry import from here; nothing here
imports from the rest of the service. The exception names are also storage's RPC contract: the other services'
``shared.storage_client`` raises local exceptions of the same names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from shared.object_keys import key_problem

CHUNK_SIZE = 64 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# What went wrong, where a backend can tell (``BackendError.reason``): the record check names it to the admin.
UNREACHABLE, CREDENTIALS, BUCKET_MISSING = "unreachable", "credentials", "bucket_missing"


class StorageError(Exception):
    pass


class InvalidKey(StorageError, ValueError):
    pass


class ObjectNotFound(StorageError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "object not found"


class ObjectTooLarge(StorageError):
    pass


class BackendError(StorageError):
    """The backend refused, failed or could not be reached. The message is safe to log and to show an operator.

    ``reason``: ``UNREACHABLE`` (no connection to the endpoint), ``CREDENTIALS`` (refused the credentials),
    ``BUCKET_MISSING`` (the bucket or container does not exist), or ``None`` when the backend cannot tell.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ObjectGone(Exception):
    """The object existed and was deleted (expired, or on request); the message says which and when (a clause:
    ``it expired on ... and was deleted on ...``)."""


class UnknownBackend(Exception):
    """No backend record has this identifier."""


class InactiveBackend(Exception):
    """The backend record exists but is deactivated: nothing new goes there."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str
    created_at: datetime
    content_type: str = DEFAULT_CONTENT_TYPE

    def to_dict(self) -> dict:
        """Plain JSON types only (safe for AMQP payloads and HTTP bodies)."""
        return {
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "created_at": self.created_at.isoformat(),
        }


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidKey`` saying why."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidKey(problem)
    return key


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and, when needed, the RFC 6266 UTF-8 ``filename*`` (the data plane
    and the backends that presign, S3 and GCS, name downloads alike)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip() or "download"
    fallback = "".join(ch if ch.isascii() and ch not in '"\\' else "_" for ch in name)
    # A plain token goes unquoted: the format's clients expect exactly "attachment; filename=event1.zip".
    token = re.fullmatch(r"[A-Za-z0-9._-]+", fallback) is not None
    value = f"attachment; filename={fallback}" if token else f'attachment; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value
