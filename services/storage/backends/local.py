"""The local filesystem backend under the common interface (behaviour unchanged: see ``local_backend.py``)."""

from __future__ import annotations

from services.storage.backends.base import ObjectBackend
from services.storage.local_backend import LocalBackend


class LocalObjectBackend(LocalBackend, ObjectBackend):
    """``LocalBackend`` as it is, plus ``presigned_get`` (it cannot sign: the data plane serves its bytes)."""

    def presigned_get(self, key: str, ttl: int, filename: str | None = None) -> str | None:
        return None
