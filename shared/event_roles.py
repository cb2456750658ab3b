"""Who holds which role in an event: granting, revoking and listing, for the gateway's roles API and the CLI alike.

Who *may* change roles is the gateway's rule (``services/api_gateway/rules.py``); here is only what a change does.
Roles are rows of ``event_roles`` (one per user, event and role: a user may be organizer and co-organizer at once).

An event never loses its last organizer. Two organizers removing each other at the same moment would each see the
other still there (write skew), so every change first locks the event's row (``SELECT ... FOR UPDATE``: role
changes of one event run one after the other on PostgreSQL), and the delete re-checks "another organizer remains"
in the same statement (SQLite, which ignores ``FOR UPDATE``, runs the statement under its single writer lock).
Neither function commits: the caller does, which releases the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from shared.models.events import EVENT_ROLES, ROLE_ORGANIZER, Event, EventRole, User


class RoleError(Exception):
    """A role change that cannot be made; the message says why."""


class EventNotFound(RoleError):
    pass


class UserNotFound(RoleError):
    pass


class RoleNotFound(RoleError):
    pass


class LastOrganizer(RoleError):
    pass


@dataclass(frozen=True)
class Role:
    """One role held: by whom, in which event."""

    id: int
    user_id: int
    email: str
    role: str


def normal_email(text: str) -> str:
    """Emails are stored trimmed and in lower case."""
    return text.strip().lower()


def _lock_event(session: Session, event_id: int) -> None:
    if session.scalar(select(Event.id).where(Event.id == event_id).with_for_update()) is None:
        raise EventNotFound(f"Event {event_id} does not exist.")


def _role(session: Session, event_id: int, user_id: int, role: str) -> Role:
    found = session.execute(
        select(EventRole.id, User.id, User.email, EventRole.role).join(User, User.id == EventRole.user_id)
        .where(EventRole.event_id == event_id, EventRole.user_id == user_id, EventRole.role == role)).one()
    return Role(*found)


def grant(session: Session, event_id: int, email: str, role: str) -> tuple[Role, bool]:
    """Give the user with ``email`` ``role`` in the event; the role and whether it is new (``False``: held already)."""
    if role not in EVENT_ROLES:
        raise ValueError(f"unknown role {role!r}")
    user_id = session.scalar(select(User.id).where(User.email == normal_email(email)))
    if user_id is None:
        raise UserNotFound(f"There is no user {normal_email(email)}.")
    _lock_event(session, event_id)
    values = {"user_id": user_id, "event_id": event_id, "role": role}
    # Two grants of the same role at once: the unique constraint keeps one row, the other insert does nothing.
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(dialect.insert(EventRole).values(**values).on_conflict_do_nothing()).rowcount
    return _role(session, event_id, user_id, role), bool(inserted)


def revoke(session: Session, event_id: int, user_id: int, role: str | None = None) -> int:
    """Remove ``role`` (``None``: every role) of the user in the event; how many rows went.

    ``LastOrganizer`` when that would leave the event without an organizer (nothing is removed then),
    ``RoleNotFound`` when the user holds no such role."""
    if role is not None and role not in EVENT_ROLES:
        raise ValueError(f"unknown role {role!r}")
    roles: Sequence[str] = (role,) if role else EVENT_ROLES
    _lock_event(session, event_id)
    query = delete(EventRole).where(EventRole.event_id == event_id, EventRole.user_id == user_id,
                                    EventRole.role.in_(roles))
    if ROLE_ORGANIZER in roles:
        other = aliased(EventRole)
        organizers = exists().where(other.event_id == event_id, other.role == ROLE_ORGANIZER)
        query = query.where(or_(organizers.where(other.user_id != user_id),  # another organizer remains
                                ~organizers.where(other.user_id == user_id)))  # or this user is none
    removed = session.execute(query.execution_options(synchronize_session=False)).rowcount
    if removed:
        return removed
    held = session.scalar(select(func.count()).select_from(EventRole).where(
        EventRole.event_id == event_id, EventRole.user_id == user_id, EventRole.role.in_(roles)))
    if held:
        raise LastOrganizer(f"User {user_id} is the last organizer of event {event_id}; make someone else "
                            "organizer first.")
    raise RoleNotFound(f"User {user_id} holds no {role or 'role'} in event {event_id}.")


def roles_page(session: Session, event_id: int, after_id: int | None, limit: int) -> list[Role]:
    """Up to ``limit`` roles of the event in the order they were granted, after the role ``after_id``."""
    query = (select(EventRole.id, User.id, User.email, EventRole.role).join(User, User.id == EventRole.user_id)
             .where(EventRole.event_id == event_id).order_by(EventRole.id).limit(limit))
    if after_id is not None:
        query = query.where(EventRole.id > after_id)
    return [Role(*row) for row in session.execute(query)]
