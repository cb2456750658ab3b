"""``/v1/webhooks``: endpoints registered with the webhooks service and their delivery logs, read over its RPCs.

Who may register for which event and who sees a webhook is asked of ``rules``; the target URL is checked by the
webhooks service (it owns ``WEBHOOK_ALLOW_HOSTS``), whose refusals answer as ``errors.WEBHOOK_REFUSALS`` says.
"""

from __future__ import annotations

from typing import Any

from werkzeug import Request, Response

from services.api_gateway import pagination, rules, schemas
from services.api_gateway.context import Gateway
from services.api_gateway.errors import webhook_errors
from services.api_gateway.rules import Caller
from shared.http import ApiError, json_response

WEBHOOKS_LIST = "webhooks"
DELIVERIES_LIST = "webhook_deliveries"


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "created_by"}


def _call(gw: Gateway, method: str, *args: Any) -> Any:
    with webhook_errors():
        return gw.webhooks(method, *args)


def create(gw: Gateway, caller: Caller, body: Any) -> Response:
    spec = schemas.parse(schemas.WebhookSchema(), body)
    with gw.db() as session:
        rules.require_webhook_registrar(session, caller, spec["event_id"])
    record = _call(gw, "create_endpoint", spec, caller.id)
    return json_response(_public(record), status=201, headers={"Location": f"/v1/webhooks/{record['id']}"})


def _visible(gw: Gateway, caller: Caller, webhook_id: int) -> dict[str, Any]:
    record = _call(gw, "get_endpoint", webhook_id)
    if record is None:
        raise ApiError(404, "webhook_not_found", f"There is no webhook {webhook_id}.")
    rules.require_webhook_viewer(caller, record["created_by"])
    return record


def _page(gw: Gateway, request: Request, list_name: str, method: str, *args: Any) -> Response:
    """One page of a list the webhooks service keeps: it pages by ``(created_at, id)`` and says where the next page
    starts; the cursor handed out is the gateway's signed one, scoped to ``list_name``."""
    page = pagination.page_query(gw, request, list_name, 2, (str, int))
    found = _call(gw, method, *args, page.limit, page.after)
    cursor = pagination.signed_cursor(gw, list_name, found["next"]) if found["next"] else None
    return pagination.answer(gw, request, [_public(r) for r in found["data"]], cursor)


def list_webhooks(gw: Gateway, caller: Caller, request: Request) -> Response:
    """Admins: every webhook; others: those they registered."""
    owner = None if rules.is_admin(caller) else caller.id
    return _page(gw, request, f"{WEBHOOKS_LIST}:{owner}", "list_endpoints", owner)


def get(gw: Gateway, caller: Caller, webhook_id: int) -> Response:
    return json_response(_public(_visible(gw, caller, webhook_id)))


def delete(gw: Gateway, caller: Caller, webhook_id: int) -> Response:
    _visible(gw, caller, webhook_id)
    _call(gw, "delete_endpoint", webhook_id)
    return Response(status=204)


def deliveries(gw: Gateway, caller: Caller, request: Request, webhook_id: int) -> Response:
    """The endpoint's deliveries, newest first (``id`` is the ``webhook-id`` header the receiver saw)."""
    _visible(gw, caller, webhook_id)
    return _page(gw, request, f"{DELIVERIES_LIST}:{webhook_id}", "list_deliveries", webhook_id)
