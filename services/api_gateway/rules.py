"""Every authorization rule of the gateway, named, in one place.

Roles: an admin (``users.is_admin``) may do everything; an event's organizer and co-organizer (``event_roles``)
manage that event, but only the organizer may delete its exports, change who holds the event's roles or register
webhooks for it; the user who started a task sees it (and lists it at ``GET /v1/tasks``), the user who registered a
webhook sees and deletes it; media at a
public key (``shared.object_keys``) need no credentials at all. ``can_*`` rules answer a question; ``require_*``
turn a ``False`` into the HTTP refusal the API documents.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from shared import object_keys
from shared.http import ApiError
from shared.models.events import EVENT_ROLES, ROLE_ORGANIZER, Event, EventRole
from shared.models.gateway import Task


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request, as the rules see it (no ORM object outlives its session)."""

    id: int
    email: str
    is_admin: bool


def _has_role(session: Session, caller: Caller, event_id: int, roles: tuple[str, ...]) -> bool:
    role = session.scalar(select(EventRole.id).where(EventRole.user_id == caller.id, EventRole.event_id == event_id,
                                                     EventRole.role.in_(roles)))
    return role is not None


# --- the rules ---------------------------------------------------------------------------------------------------

def is_admin(caller: Caller) -> bool:
    return caller.is_admin


def can_manage_event(session: Session, caller: Caller, event_id: int) -> bool:
    """See, export and list the exports of an event: its organizers, co-organizers and admins."""
    return is_admin(caller) or _has_role(session, caller, event_id, EVENT_ROLES)


def can_delete_export(session: Session, caller: Caller, event_id: int) -> bool:
    """Delete an export's archive: the event's organizers and admins (co-organizers may export, not delete)."""
    return is_admin(caller) or _has_role(session, caller, event_id, (ROLE_ORGANIZER,))


def can_change_roles(session: Session, caller: Caller, event_id: int) -> bool:
    """Add or remove an event's organizers and co-organizers: its organizers and admins (co-organizers read the
    list only: ``can_manage_event``)."""
    return is_admin(caller) or _has_role(session, caller, event_id, (ROLE_ORGANIZER,))


def can_see_task(caller: Caller, task: Task) -> bool:
    """A task (export or import): the user who started it, and admins."""
    return task.requested_by == caller.id or is_admin(caller)


def can_register_webhook(session: Session, caller: Caller, event_id: int | None) -> bool:
    """A webhook for one event: its organizers and admins; for every event (``None``): admins only."""
    if event_id is None:
        return is_admin(caller)
    return is_admin(caller) or _has_role(session, caller, event_id, (ROLE_ORGANIZER,))


def can_see_webhook(caller: Caller, created_by: int) -> bool:
    """A webhook (and its deliveries; deleting it): the user who registered it, and admins."""
    return created_by == caller.id or is_admin(caller)


def can_read_media(key: str) -> bool:
    """``GET /media/<key>`` without credentials: uploads and media re-hosted by imports, nothing else."""
    return object_keys.is_public_key(key)


def visible_events(caller: Caller) -> Select:
    """The events ``GET /v1/events`` lists: those the caller has a role in (all of them for admins), unordered (the
    route pages through it)."""
    query = select(Event)
    if not is_admin(caller):
        query = query.where(exists().where(EventRole.event_id == Event.id, EventRole.user_id == caller.id))
    return query


# --- refusals ----------------------------------------------------------------------------------------------------

def require_admin(caller: Caller, what: str) -> None:
    """403 unless an admin; ``what`` completes "Only admins may ..." (``"see the mail log"``)."""
    if not is_admin(caller):
        raise ApiError(403, "forbidden", f"Only admins may {what}.")


def require_event_manager(session: Session, caller: Caller, event_id: int) -> Event:
    """The event, if it exists (404) and the caller may manage it (403)."""
    event = session.get(Event, event_id)
    if event is None:
        raise ApiError(404, "event_not_found", f"Event {event_id} does not exist.")
    if not can_manage_event(session, caller, event_id):
        raise ApiError(403, "forbidden", f"Only organizers, co-organizers and admins may do this for event {event_id}.")
    return event


def require_role_manager(session: Session, caller: Caller, event_id: int) -> None:
    """404 for an event that does not exist, 403 unless the caller may change its roles."""
    require_event_manager(session, caller, event_id)
    if not can_change_roles(session, caller, event_id):
        raise ApiError(403, "forbidden", f"Only organizers and admins may change the roles of event {event_id}.")


def require_export_deleter(session: Session, caller: Caller, event_id: int) -> None:
    if not can_delete_export(session, caller, event_id):
        raise ApiError(403, "forbidden", f"Only organizers and admins may delete exports of event {event_id}.")


def require_task_viewer(caller: Caller, task: Task) -> None:
    if not can_see_task(caller, task):
        raise ApiError(403, "forbidden", "Only the user who started a task and admins may see it.")


def require_webhook_registrar(session: Session, caller: Caller, event_id: int | None) -> None:
    if event_id is not None and session.get(Event, event_id) is None:
        raise ApiError(404, "event_not_found", f"Event {event_id} does not exist.")
    if not can_register_webhook(session, caller, event_id):
        if event_id is None:
            raise ApiError(403, "forbidden", "Only admins may register a webhook for all events; give an event_id.")
        raise ApiError(403, "forbidden", f"Only organizers and admins may register webhooks for event {event_id}.")


def require_webhook_viewer(caller: Caller, created_by: int) -> None:
    if not can_see_webhook(caller, created_by):
        raise ApiError(403, "forbidden", "Only the user who registered a webhook and admins may see or delete it.")


def require_public_media(key: str) -> str:
    """The key, if ``GET /media/<key>`` may serve it; else 404 (not 403: the address simply holds nothing)."""
    if not can_read_media(key):
        raise ApiError(404, "not_found", "No media exists at this address.")
    return key
