"""``/v1/events/{id}/roles``: who organizes an event. Organizers, co-organizers and admins read the list; organizers
and admins add and remove roles (``rules.require_role_manager``). What a change does, and why an event never loses
its last organizer even under concurrent requests, is ``shared/event_roles.py`` (the CLI's ``grant``/``revoke`` too).
"""

from __future__ import annotations

from typing import Any

from werkzeug import Request, Response

from services.api_gateway import pagination, rules
from services.api_gateway.context import Gateway
from services.api_gateway.rules import Caller
from shared import event_roles
from shared.event_roles import EventNotFound, LastOrganizer, Role, RoleNotFound, UserNotFound
from shared.http import ApiError, json_response


def role_view(role: Role) -> dict[str, Any]:
    return {"user_id": role.user_id, "email": role.email, "role": role.role}


def list_roles(gw: Gateway, request: Request, caller: Caller, event_id: int) -> Response:
    """The event's roles in the order they were granted, one page (keyset on the role row)."""
    name = f"roles:{event_id}"
    page = pagination.page_query(gw, request, name, 1, (int,))
    with gw.db() as session:
        rules.require_event_manager(session, caller, event_id)
        found = event_roles.roles_page(session, event_id, page.after[0] if page.after else None, page.limit + 1)
    return pagination.page_response(gw, request, name, page, found, lambda r: (r.id,), role_view)


def add_role(gw: Gateway, caller: Caller, event_id: int, email: str, role: str) -> Response:
    """``201`` with the role, or ``200`` with it when the user held it already; ``404 user_not_found``."""
    with gw.db() as session:
        rules.require_role_manager(session, caller, event_id)
        try:
            granted, created = event_roles.grant(session, event_id, email, role)
        except UserNotFound as exc:
            raise ApiError(404, "user_not_found", f"{exc} Users are created by an operator first.") from None
        except EventNotFound as exc:  # deleted since the rule's check
            raise ApiError(404, "event_not_found", str(exc)) from None
        session.commit()
    return json_response(role_view(granted), status=201 if created else 200)


def remove_role(gw: Gateway, caller: Caller, event_id: int, user_id: int, role: str | None) -> Response:
    """``204``; ``409 last_organizer`` when the event would be left without one, ``404 role_not_found``."""
    with gw.db() as session:
        rules.require_role_manager(session, caller, event_id)
        try:
            event_roles.revoke(session, event_id, user_id, role)
        except LastOrganizer as exc:
            raise ApiError(409, "last_organizer", str(exc)) from None
        except RoleNotFound as exc:
            raise ApiError(404, "role_not_found", str(exc)) from None
        except EventNotFound as exc:
            raise ApiError(404, "event_not_found", str(exc)) from None
        session.commit()
    return Response(status=204)
