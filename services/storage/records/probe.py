"""The check a backend record passes before it is saved: a real put, stat and delete of a small probe object.

A record that points at an unreachable endpoint, with wrong credentials or at a missing bucket is refused with a
400 that names what failed, instead of failing at the first export. The probe goes through the same backend code
as exports (``ObjectBackend``), so what it proves is what exports need. Messages never carry secrets: they are
built from ``BackendError`` messages, which never do (backends/README.md).
"""

from __future__ import annotations

import uuid

import eventlet

from services.storage.backends.base import ObjectBackend
from services.storage.records.config import InvalidBackendConfig
from services.storage.types import BUCKET_MISSING, CREDENTIALS, UNREACHABLE, BackendError, StorageError

PROBE_PREFIX = "_probe/"
_EXPLAIN = {
    UNREACHABLE: "the endpoint cannot be reached",
    CREDENTIALS: "the credentials were refused",
    BUCKET_MISSING: "the bucket does not exist",
}


class BackendCheckFailed(InvalidBackendConfig):
    """The record is well-formed but the backend it describes does not work; nothing was saved."""


def _fail(identifier: str, kind: str, step: str, why: str) -> BackendCheckFailed:
    return BackendCheckFailed(
        f"Storage backend {identifier!r} ({kind}) failed its check: could not {step} a probe object: {why}. "
        "Nothing was saved; fix the record and send it again.")


def check_backend(backend: ObjectBackend, identifier: str, kind: str, timeout: float) -> None:
    """Put, stat and delete a probe object in ``backend``; ``BackendCheckFailed`` naming the step and the cause."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    body = f"storage backend check of {identifier}\n".encode()
    step, stored = "find the bucket for", False
    try:
        with eventlet.Timeout(timeout):
            backend.check_container()
            step = "store"
            info = backend.put_stream(key, iter([body]), content_type="text/plain")
            stored = True
            step = "read back"
            found = backend.stat(key)
            if found is None or found.size != len(body) or found.sha256 != info.sha256:
                raise _fail(identifier, kind, step, "the object stored a moment ago is missing or different")
            step = "delete"
            backend.delete(key)
            stored = False
    except eventlet.Timeout:
        raise _fail(identifier, kind, step, f"no answer within {timeout:g} s ({_EXPLAIN[UNREACHABLE]}?)") from None
    except BackendError as exc:
        why = f"{_EXPLAIN[exc.reason]} ({exc})" if exc.reason in _EXPLAIN else str(exc)
        raise _fail(identifier, kind, step, why) from None
    except StorageError as exc:
        raise _fail(identifier, kind, step, str(exc)) from None
    finally:
        if stored:  # a failed read-back or delete must not leave the probe behind
            try:
                with eventlet.Timeout(timeout):
                    backend.delete(key)
            except (eventlet.Timeout, StorageError):
                pass
