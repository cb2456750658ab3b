"""Who may see and export which event: organizers, co-organizers of that event, and admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.http import MAX_DB_INT, ApiError
from shared.models import EVENT_ROLES, Event, EventRole, User


def current_user(session: Session, user_id: int) -> User:
    if not 0 < user_id <= MAX_DB_INT:  # a signed token with a 30-digit sub: no row can have that id
        raise ApiError(401, "invalid_token", "The access token names no valid user.")
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(401, "invalid_token", "The access token belongs to a user that no longer exists.")
    return user


def manages_event(session: Session, user: User, event_id: int) -> bool:
    if user.is_admin:
        return True
    role = session.scalar(
        select(EventRole.id).where(
            EventRole.user_id == user.id, EventRole.event_id == event_id, EventRole.role.in_(EVENT_ROLES)
        )
    )
    return role is not None


def require_event_manager(session: Session, user: User, event_id: int) -> Event:
    """The event, if it exists (404) and the user organizes it or is an admin (403)."""
    event = session.get(Event, event_id)
    if event is None:
        raise ApiError(404, "event_not_found", f"Event {event_id} does not exist.")
    if not manages_event(session, user, event_id):
        raise ApiError(403, "forbidden", f"Only organizers, co-organizers and admins may do this for event {event_id}.")
    return event


def visible_events(session: Session, user: User) -> list[Event]:
    query = select(Event).order_by(Event.id)
    if not user.is_admin:
        query = query.join(EventRole, EventRole.event_id == Event.id).where(EventRole.user_id == user.id).distinct()
    return list(session.scalars(query))
