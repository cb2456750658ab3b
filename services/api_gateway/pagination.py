"""Every list of the gateway, one page at a time (README, "Pagination"): ``?limit=&cursor=`` in,
``{"data": [...], "next_cursor"}`` and a ``Link: <next page>; rel="next"`` header out.

Keyset pagination: a page is "the next ``limit`` items after the last one the client saw", by the list's sort key
(``(created_at, id)`` newest first for the time-ordered lists). Rows inserted between two fetches never shift a
later page, and deep pages cost what the first does (an index on the sort key, migration 0009). The cursor is the
last item's sort key, signed for the one list it was made for (``shared/pagination.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy import Select, bindparam, tuple_
from werkzeug import Request, Response

from services.api_gateway.context import Gateway
from shared import pagination
from shared.http import ApiError, json_response
from shared.pagination import MAX_PAGE_SIZE, CursorValue, InvalidCursor, InvalidLimit, PageQuery

__all__ = ["MAX_PAGE_SIZE", "PageQuery", "answer", "keyset", "page_query", "page_response", "signed_cursor"]

T = TypeVar("T")


def page_query(gw: Gateway, request: Request, list_name: str, width: int,
               types: Sequence[type] | None = None) -> PageQuery:
    """The page the request asks for; ``400 invalid_parameter`` for a bad ``limit``, ``400 invalid_cursor`` for a
    cursor of another list (or none of ours). ``types``: what each value of the sort key must be."""
    try:
        query = pagination.page_query(list_name, request.args, gw.config.cursor_key, width)
        if query.after is not None and types is not None and not all(
                isinstance(value, kind) for value, kind in zip(query.after, types, strict=True)):
            raise InvalidCursor("wrong types")
        return query
    except InvalidLimit as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None
    except InvalidCursor:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this list gave out; start again without "
                                              "'cursor'.") from None


def keyset(query: Select, columns: Sequence[Any], page: PageQuery, descending: bool = True) -> Select:
    """``query`` restricted to the rows after the cursor, in sort-key order, one more than a page (whether a next
    page exists is whether that row came)."""
    if page.after is not None:
        after = tuple_(*(bindparam(None, value, type_=column.type) for column, value in zip(columns, page.after,
                                                                                              strict=True)))
        query = query.where(tuple_(*columns) < after if descending else tuple_(*columns) > after)
    order = [column.desc() if descending else column.asc() for column in columns]
    return query.order_by(*order).limit(page.limit + 1)


def next_page_url(gw: Gateway, request: Request, cursor: str) -> str:
    """The absolute address of the next page: this one's, with its filters and limit, at ``cursor``."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"] + [("cursor", cursor)]
    return f"{gw.config.gateway_url}{request.path}?{urlencode(args)}"


def signed_cursor(gw: Gateway, list_name: str, values: Sequence[CursorValue]) -> str:
    return pagination.encode_cursor(list_name, values, gw.config.cursor_key)


def answer(gw: Gateway, request: Request, data: list[Any], cursor: str | None,
           extra: dict[str, Any] | None = None) -> Response:
    """``{"data", **extra, "next_cursor"}`` with the ``Link`` header of the next page when there is one."""
    headers = {"Link": f'<{next_page_url(gw, request, cursor)}>; rel="next"'} if cursor else {}
    return json_response({"data": data, **(extra or {}), "next_cursor": cursor}, headers=headers)


def page_response(gw: Gateway, request: Request, list_name: str, page: PageQuery, rows: Sequence[T],
                  sort_key: Callable[[T], Sequence[CursorValue]], render: Callable[[T], Any],
                  extra: dict[str, Any] | None = None) -> Response:
    """The page of ``rows`` (up to ``limit + 1`` of them, as ``keyset`` fetched), with the cursor of the next one;
    ``extra``: more top-level keys of the answer."""
    more = len(rows) > page.limit
    shown = rows[:page.limit]
    cursor = signed_cursor(gw, list_name, sort_key(shown[-1])) if more else None
    return answer(gw, request, [render(row) for row in shown], cursor, extra)
