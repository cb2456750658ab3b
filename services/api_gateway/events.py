"""``GET /v1/events`` and ``GET /v1/events/{id}``: the events a caller manages."""

from __future__ import annotations

from typing import Any

from werkzeug import Response

from services.api_gateway import rules
from services.api_gateway.context import Gateway
from services.api_gateway.rules import Caller
from shared.event_stats import record_counts
from shared.http import json_response
from shared.models.events import Event

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


def list_events(gw: Gateway, caller: Caller) -> Response:
    with gw.db() as session:
        return json_response({"data": [summary(e) for e in rules.visible_events(session, caller)]})


def get_event(gw: Gateway, caller: Caller, event_id: int) -> Response:
    with gw.db() as session:
        event = rules.require_event_manager(session, caller, event_id)
        return json_response({**summary(event), "counts": record_counts(session, event_id)})
