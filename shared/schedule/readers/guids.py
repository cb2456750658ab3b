"""GUIDs of imported records: the file's own when it is a UUID, else one derived from the event and the record."""

from __future__ import annotations

import uuid
from typing import Any

_NAMESPACE = uuid.UUID("6f1c0b1e-4d0e-5c56-9a53-6b1f8e0b2a10")


def valid_guid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def derived_guid(event_key: Any, kind: str, source_id: Any) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{event_key}/{kind}/{source_id}"))
