"""``GET /v1/events``, ``GET /v1/events/{id}``: the events a caller manages; ``PUT /v1/events/{id}/publication``:
whether its schedule feeds are public."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug import Request, Response

from services.api_gateway import pagination, rules
from services.api_gateway.context import Gateway
from services.api_gateway.rules import Caller
from shared.event_stats import record_counts
from shared.http import json_response
from shared.models.base import utcnow
from shared.models.events import Event
from shared.schedule.feeds import FEEDS, PUBLISHED_STATES

_FMT = "%Y-%m-%dT%H:%M:%S"


def summary(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "identifier": event.identifier,
        "name": event.name,
        "start_time": event.start_time.strftime(_FMT) if event.start_time else None,
        "end_time": event.end_time.strftime(_FMT) if event.end_time else None,
        "timezone": event.timezone,
    }


def list_events(gw: Gateway, request: Request, caller: Caller) -> Response:
    """The caller's events (all for admins), newest first, one page."""
    name = f"events:{caller.id}"
    page = pagination.page_query(gw, request, name, 2, (datetime, int))
    with gw.db() as session:
        found = list(session.scalars(pagination.keyset(rules.visible_events(caller), (Event.created_at, Event.id),
                                                       page)))
        return pagination.page_response(gw, request, name, page, found, lambda e: (e.created_at, e.id), summary)


def get_event(gw: Gateway, caller: Caller, event_id: int) -> Response:
    with gw.db() as session:
        event = rules.require_event_manager(session, caller, event_id)
        return json_response({**summary(event), "counts": record_counts(session, event_id)})


def set_publication(gw: Gateway, caller: Caller, event_id: int, published: bool) -> Response:
    """Publish (Open Event state ``published``, privacy ``public``) or withdraw (``draft``) the event's schedule.
    The feeds' change stamp holds state and privacy, so the next request sees the change."""
    with gw.db() as session:
        event = rules.require_event_manager(session, caller, event_id)
        if published:
            if (event.state or "").strip().lower() not in PUBLISHED_STATES:
                event.state = "published"
            event.privacy = "public"
            extras = event.extra_fields or {}
            if "schedule_published_on" in extras and not extras["schedule_published_on"]:
                # an imported record that said "not published" would keep the feeds closed
                event.extra_fields = {**extras, "schedule_published_on": utcnow().strftime(_FMT)}
        else:
            event.state = "draft"
        session.commit()
    base = f"{gw.config.gateway_url}/v1/events/{event_id}/schedule"
    return json_response({"id": event_id, "published": published,
                          "feeds": {ext: f"{base}.{ext}" for ext in FEEDS} if published else {}})
