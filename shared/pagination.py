"""Keyset pagination shared by every list: ``limit`` and an opaque ``cursor`` in, ``next_cursor`` and a ``Link``
header out (docs: README, Pagination).

A cursor is the URL-safe base64 of ``{"l": <list name>, "v": <the last row's sort values>}``: not secret (it only
says where a page ends), but bound to its list, so a cursor of another list is ``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from shared.http import ApiError

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
MAX_CURSOR_CHARS = 1024


def encode_cursor(list_name: str, values: list[Any]) -> str:
    raw = json.dumps({"l": list_name, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(list_name: str, text: str) -> list[Any]:
    """The sort values of a cursor made for ``list_name``; 400 ``invalid_cursor`` otherwise."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(data, dict) or data.get("l") != list_name or not isinstance(data.get("v"), list):
            raise ValueError("not this list's cursor")
        return data["v"]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this list gave out.") from None


def page_query(list_name: str, args: Mapping[str, str]) -> tuple[int, list[Any] | None]:
    """``(limit, after)`` of a query string: ``limit`` 1..MAX_PAGE_SIZE (default 50), ``after`` the cursor's values."""
    raw = args.get("limit")
    if raw is None or raw == "":
        limit = DEFAULT_PAGE_SIZE
    elif raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE_SIZE:
        limit = int(raw)
    else:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE_SIZE}.")
    cursor = args.get("cursor")
    return limit, (decode_cursor(list_name, cursor) if cursor else None)


def page_answer(list_name: str, data: list[Any], after: list[Any] | None, base_url: str,
                args: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The answer body ``{"data", "next_cursor"}`` and its headers (``Link: <next page>; rel="next"``)."""
    cursor = encode_cursor(list_name, after) if after else None
    headers: dict[str, str] = {}
    if cursor:
        query = {k: v for k, v in args.items() if k != "cursor"}
        query["cursor"] = cursor
        headers["Link"] = f'<{base_url}?{urlencode(query)}>; rel="next"'
    return {"data": data, "next_cursor": cursor}, headers
