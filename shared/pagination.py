"""Keyset pagination cursors and page-size parsing, for every list the platform serves.

A cursor is the sort key of the last item of a page (``values``: ints, strings, ``None`` and naive datetimes), as
``<base64url JSON>.<base64url MAC>``. The MAC (HMAC-SHA256, truncated to 16 bytes) covers the list's name and the
JSON, under a key derived from ``SECRET_KEY``: a client cannot make a cursor up, change one, or take one made for
one list (the exports of event 5) to another (the exports of event 6, or the tasks). Opaque to clients, but not
secret: the values are sort keys the page already showed.

The page size is ``limit``: 1 to ``MAX_PAGE_SIZE`` (200), ``DEFAULT_PAGE_SIZE`` (50) when absent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
MAX_CURSOR_CHARS = 1024  # longer than any cursor we make: refused before any decoding work
_MAC_BYTES = 16
_DOMAIN = b"portability/cursor/v1\x00"

CursorValue = int | str | None | datetime


class InvalidCursor(ValueError):
    """The cursor does not decode, was tampered with, or was made for another list."""


class InvalidLimit(ValueError):
    """``limit`` is not a whole number from 1 to ``MAX_PAGE_SIZE``."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, list_name: str, payload: str) -> bytes:
    message = _DOMAIN + list_name.encode() + b"\x00" + payload.encode("ascii")
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _to_json(value: CursorValue) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}  # microseconds kept: the keyset must resume exactly after the item
    if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    raise TypeError(f"a cursor cannot hold {type(value).__name__}")


def _from_json(value: Any) -> CursorValue:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        try:
            return datetime.fromisoformat(value["t"])
        except ValueError:
            raise InvalidCursor("bad time") from None
    if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    raise InvalidCursor("bad value")


def encode_cursor(list_name: str, values: Sequence[CursorValue], key: bytes = b"") -> str:
    """The cursor that resumes ``list_name`` after the item whose sort key is ``values``."""
    payload = _b64(json.dumps([_to_json(v) for v in values], separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, list_name, payload))}"


def decode_cursor(list_name: str, text: str, key: bytes = b"") -> list[CursorValue]:
    """The sort key a cursor of ``list_name`` holds; ``InvalidCursor`` for anything else."""
    if not isinstance(text, str) or not text or len(text) > MAX_CURSOR_CHARS or not text.isascii():
        raise InvalidCursor("malformed")
    payload, dot, mac = text.partition(".")
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError):
        raise InvalidCursor("malformed") from None
    if not dot or not hmac.compare_digest(given, _mac(key, list_name, payload)):
        raise InvalidCursor("not a cursor of this list")
    try:
        values = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        raise InvalidCursor("malformed") from None
    if not isinstance(values, list):
        raise InvalidCursor("malformed")
    return [_from_json(v) for v in values]


def parse_limit(raw: str | None) -> int:
    """``limit`` from a query string: absent or empty is ``DEFAULT_PAGE_SIZE``."""
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidLimit(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, not {raw[:20]!r}.")
    return int(raw)


@dataclass(frozen=True)
class PageQuery:
    """One page asked for: its size and the sort key to resume after (``None``: the first page)."""

    limit: int
    after: list[CursorValue] | None


def page_query(list_name: str, args: Mapping[str, str], key: bytes = b"", width: int | None = None) -> PageQuery:
    """``limit`` and ``cursor`` of a query string; ``width``: how many values the list's sort key has."""
    limit = parse_limit(args.get("limit"))
    raw = args.get("cursor")
    if raw is None or raw == "":
        return PageQuery(limit, None)
    after = decode_cursor(list_name, raw, key)
    if width is not None and len(after) != width:
        raise InvalidCursor("wrong shape")
    return PageQuery(limit, after)
