"""``/v1/webhooks``: endpoints registered with the webhooks service and their delivery logs, read over its RPCs.

Who may register for which event and who sees a webhook is asked of ``rules``; the target URL is checked by the
webhooks service (it owns ``WEBHOOK_ALLOW_HOSTS``), whose refusals answer as ``errors.WEBHOOK_REFUSALS`` says.
"""

from __future__ import annotations

from typing import Any

from werkzeug import Request, Response

from services.api_gateway import rules, schemas
from services.api_gateway.context import Gateway
from services.api_gateway.errors import webhook_errors
from services.api_gateway.rules import Caller
from shared.http import ApiError, json_response
from shared.pagination import page_answer, page_query

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
    limit, after = page_query(list_name, request.args)
    page = _call(gw, method, *args, limit, after)
    body, headers = page_answer(list_name, [_public(r) for r in page["data"]], page["next"],
                                gw.config.gateway_url + request.path, request.args)
    return json_response(body, headers=headers)


def list_webhooks(gw: Gateway, caller: Caller, request: Request) -> Response:
    """Admins: every webhook; others: those they registered."""
    return _page(gw, request, WEBHOOKS_LIST, "list_endpoints", None if rules.is_admin(caller) else caller.id)


def get(gw: Gateway, caller: Caller, webhook_id: int) -> Response:
    return json_response(_public(_visible(gw, caller, webhook_id)))


def delete(gw: Gateway, caller: Caller, webhook_id: int) -> Response:
    _visible(gw, caller, webhook_id)
    _call(gw, "delete_endpoint", webhook_id)
    return Response(status=204)


def deliveries(gw: Gateway, caller: Caller, request: Request, webhook_id: int) -> Response:
    """The endpoint's deliveries, newest first (``id`` is the ``webhook-id`` header the receiver saw)."""
    _visible(gw, caller, webhook_id)
    return _page(gw, request, DELIVERIES_LIST, "list_deliveries", webhook_id)
