"""The gateway's authorization rules (``services/api_gateway/rules.py``) as a table: every rule x every role."""

from __future__ import annotations

import pytest

from services.api_gateway import rules
from services.api_gateway.rules import Caller
from shared.db import make_engine, make_session_factory
from shared.http import ApiError
from shared.models.base import Base
from shared.models.events import ROLE_COORGANIZER, ROLE_ORGANIZER, Event, EventRole, User
from shared.models.gateway import Task

ROLES = ("admin", "organizer", "coorganizer", "requester", "stranger")
PUBLIC_KEY = "uploads/2/4f0c1c1e-0000-4000-8000-000000000001/logo.png"
PRIVATE_KEY = "exports/1/4f0c1c1e-0000-4000-8000-000000000001.zip"

# rule -> the roles it allows (the requester started the task, has no role in the event and is no admin)
EXPECTED = {
    "is_admin": {"admin"},
    "can_manage_event": {"admin", "organizer", "coorganizer"},
    "can_delete_export": {"admin", "organizer"},
    "can_change_roles": {"admin", "organizer"},
    "can_see_task": {"admin", "requester"},
    "can_read_media": set(ROLES),  # public media need no credentials: every role, and nobody at all
    "can_read_private_media": set(),  # exports are never served at /media/, whoever asks
    "visible_events": {"admin", "organizer", "coorganizer"},
    "can_register_webhook": {"admin", "organizer"},  # for the event; co-organizers may not
    "can_register_webhook_for_all_events": {"admin"},
    "can_see_webhook": {"admin", "requester"},  # the requester registered it
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('rules')}/rules.db")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        users = {name: User(email=f"{name}@example.org", password_hash="x", is_admin=name == "admin")
                 for name in ROLES}
        event = Event(identifier="e1", name="E1")
        session.add_all([*users.values(), event, Event(identifier="e2", name="E2")])
        session.flush()
        session.add_all([EventRole(user_id=users["organizer"].id, event_id=event.id, role=ROLE_ORGANIZER),
                         EventRole(user_id=users["coorganizer"].id, event_id=event.id, role=ROLE_COORGANIZER)])
        task = Task(id="t1", kind="export", event_id=event.id, requested_by=users["requester"].id,
                    requester_email="requester@example.org", params={}, state="WAITING", status="queued")
        session.add(task)
        session.commit()
        callers = {name: Caller(id=u.id, email=u.email, is_admin=u.is_admin) for name, u in users.items()}
        yield factory, callers, event.id


def _allowed(rule: str, session, caller: Caller, event_id: int) -> bool:
    if rule == "is_admin":
        return rules.is_admin(caller)
    if rule == "can_manage_event":
        return rules.can_manage_event(session, caller, event_id)
    if rule == "can_delete_export":
        return rules.can_delete_export(session, caller, event_id)
    if rule == "can_change_roles":
        return rules.can_change_roles(session, caller, event_id)
    if rule == "can_see_task":
        return rules.can_see_task(caller, session.get(Task, "t1"))
    if rule == "can_read_media":
        return rules.can_read_media(PUBLIC_KEY)
    if rule == "can_read_private_media":
        return rules.can_read_media(PRIVATE_KEY)
    if rule == "visible_events":
        return event_id in [e.id for e in session.scalars(rules.visible_events(caller))]
    if rule == "can_register_webhook":
        return rules.can_register_webhook(session, caller, event_id)
    if rule == "can_register_webhook_for_all_events":
        return rules.can_register_webhook(session, caller, None)
    if rule == "can_see_webhook":
        return rules.can_see_webhook(caller, session.get(Task, "t1").requested_by)
    raise AssertionError(rule)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_rule_by_role(world, rule, role):
    factory, callers, event_id = world
    with factory() as session:
        assert _allowed(rule, session, callers[role], event_id) is (role in EXPECTED[rule])


@pytest.mark.parametrize("role", ROLES)
def test_refusals_follow_the_rules(world, role):
    """Each ``require_*`` refuses exactly where its rule says no, with the documented status."""
    factory, callers, event_id = world
    caller = callers[role]
    checks = [
        (lambda s: rules.require_admin(caller, "see the mail log"), "is_admin", 403),
        (lambda s: rules.require_event_manager(s, caller, event_id), "can_manage_event", 403),
        (lambda s: rules.require_export_deleter(s, caller, event_id), "can_delete_export", 403),
        (lambda s: rules.require_role_manager(s, caller, event_id), "can_change_roles", 403),
        (lambda s: rules.require_task_viewer(caller, s.get(Task, "t1")), "can_see_task", 403),
        (lambda s: rules.require_webhook_registrar(s, caller, event_id), "can_register_webhook", 403),
        (lambda s: rules.require_webhook_registrar(s, caller, None), "can_register_webhook_for_all_events", 403),
        (lambda s: rules.require_webhook_viewer(caller, s.get(Task, "t1").requested_by), "can_see_webhook", 403),
    ]
    with factory() as session:
        for check, rule, status in checks:
            if role in EXPECTED[rule]:
                check(session)
            else:
                with pytest.raises(ApiError) as info:
                    check(session)
                assert (info.value.status, info.value.code) == (status, "forbidden")
        with pytest.raises(ApiError) as info:  # an event that does not exist: 404 for everyone, admins too
            rules.require_event_manager(session, caller, event_id + 1000)
        assert info.value.status == 404
        with pytest.raises(ApiError) as info:
            rules.require_role_manager(session, caller, event_id + 1000)
        assert info.value.status == 404
        with pytest.raises(ApiError) as info:
            rules.require_public_media(PRIVATE_KEY)
        assert info.value.status == 404
        assert rules.require_public_media(PUBLIC_KEY) == PUBLIC_KEY


def test_visible_events_lists_each_event_once_on_both_databases(session_factory):
    """A user with two roles in one event sees it once; on PostgreSQL too, whose DISTINCT cannot compare the JSON
    columns of events (a JOIN + DISTINCT listing answered 500 there for every organizer)."""
    with session_factory() as session:
        user = User(email="both@example.org", password_hash="x", is_admin=False)
        mine, other = Event(identifier="m", name="Mine", extra_fields={"k": 1}), Event(identifier="o", name="Other")
        session.add_all([user, mine, other])
        session.flush()
        session.add_all([EventRole(user_id=user.id, event_id=mine.id, role=ROLE_ORGANIZER),
                         EventRole(user_id=user.id, event_id=mine.id, role=ROLE_COORGANIZER)])
        session.commit()
        caller = Caller(id=user.id, email=user.email, is_admin=False)
        assert [e.id for e in session.scalars(rules.visible_events(caller).order_by(Event.id))] == [mine.id]
        admin = Caller(id=user.id, email=user.email, is_admin=True)
        assert [e.id for e in session.scalars(rules.visible_events(admin).order_by(Event.id))] == [mine.id, other.id]
