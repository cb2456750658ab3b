"""``GET /v1/events/{id}/schedule.xml|.json|.ics``: the public schedule feeds, with conditional requests.

Anyone may read a published event's feeds (no token); 404 otherwise. Answers carry ``ETag``, ``Last-Modified``
and ``Cache-Control: public, max-age`` so apps refresh with ``If-None-Match``/``If-Modified-Since`` and get
``304 Not Modified`` while nothing changed. CORS comes from the app-wide middleware (``CORS_ORIGINS``).
"""

from __future__ import annotations

from werkzeug import Request, Response
from werkzeug.http import http_date, parse_date

from services.api_gateway.context import Gateway
from shared.archive.formats import get_format
from shared.http import ApiError
from shared.schedule.feeds import FEEDS, Feed, FeedCache, FeedNotFound, not_modified
from shared.schedule.snapshot import Schedule

MAX_AGE = 60  # seconds a client or proxy may reuse an answer before asking again


def _render(schedule: Schedule, identifier: str) -> bytes:
    return b"".join(get_format(identifier).render_schedule(schedule))


def _content_type(identifier: str) -> str:
    return get_format(identifier).content_type


CACHE = FeedCache(_render, _content_type)  # one per gateway process: feeds are the same for every caller


def _headers(feed: Feed, event_id: int, extension: str) -> dict[str, str]:
    return {"ETag": feed.etag, "Last-Modified": http_date(feed.last_modified),
            "Cache-Control": f"public, max-age={MAX_AGE}",
            "Content-Disposition": f'inline; filename="schedule-{event_id}.{extension}"'}


def schedule_feed(gw: Gateway, request: Request, event_id: int, extension: str) -> Response:
    if extension not in FEEDS:
        raise ApiError(404, "not_found", f"No feed schedule.{extension}; feeds: "
                                         + ", ".join(f"schedule.{e}" for e in FEEDS) + ".")
    with gw.db() as session:
        try:
            feed = CACHE.get(session, event_id, extension, gw.config.gateway_url + "/")
        except FeedNotFound as exc:
            raise ApiError(404, "schedule_not_published", str(exc)) from None
    headers = _headers(feed, event_id, extension)
    if request.method in ("GET", "HEAD") and not_modified(feed, request.headers.get("If-None-Match"),
                                                          parse_date(request.headers.get("If-Modified-Since"))):
        return Response(status=304, headers=headers)
    return Response(feed.body, status=200, headers=headers, content_type=feed.content_type)
