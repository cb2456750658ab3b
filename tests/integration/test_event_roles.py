"""Event roles through the gateway (``/v1/events/{id}/roles``) and ``shared/event_roles.py`` (also the CLI's), on
SQLite and PostgreSQL; the last organizer survives two organizers removing each other at the same moment."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway import auth
from services.api_gateway.dependencies import row_reader
from services.api_gateway.quotas import load_quota_settings
from services.api_gateway.service import ApiGatewayService
from shared import event_roles
from shared.config import load_settings
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.http import ApiError
from shared.models.events import ROLE_COORGANIZER, ROLE_ORGANIZER, Event, EventRole, User
from tools import cli

NAMES = ("orga", "orgb", "coorg", "stranger", "admin", "newbie")


@pytest.fixture
def world(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    factory = make_session_factory(make_engine(database_url))
    settings = load_settings()
    with factory() as session:
        users = {n: User(email=f"{n}@example.org", password_hash="x", is_admin=n == "admin") for n in NAMES}
        event = Event(name="E")
        session.add_all([*users.values(), event])
        session.flush()
        session.add_all([EventRole(user_id=users["orga"].id, event_id=event.id, role=ROLE_ORGANIZER),
                         EventRole(user_id=users["coorg"].id, event_id=event.id, role=ROLE_COORGANIZER)])
        session.commit()
        tokens = {n: auth.issue_token(u, settings.token_key, 600) for n, u in users.items()}
        ids = {n: u.id for n, u in users.items()}
    service = worker_factory(ApiGatewayService, db=factory, config=settings, quota=load_quota_settings(),
                   reader=row_reader(factory.kw["bind"]))
    return service, factory, tokens, ids, event.id


def _call(service, who_token: str, method: str, path: str, body: object = None):
    data = json.dumps(body).encode() if body is not None else None
    request = Request(EnvironBuilder(method=method, path=path, data=data,
                                     headers={"Authorization": f"Bearer {who_token}"}).get_environ())
    parts = path.split("?")[0].strip("/").split("/")  # v1 events <id> roles [<user>]
    if len(parts) == 5:
        return service.remove_event_role(request, int(parts[2]), int(parts[4]))
    return service.event_roles(request, int(parts[2]))


def _refused(status: int, code: str, *call: object) -> None:
    """``_call(*call)`` answers ``status`` and ``code``."""
    with pytest.raises(ApiError) as err:
        _call(*call)
    assert (err.value.status, err.value.code) == (status, code), err.value


def _roles(factory, event_id: int) -> set[tuple[int, str]]:
    with factory() as session:
        found = session.scalars(sa.select(EventRole).where(EventRole.event_id == event_id))
        return {(r.user_id, r.role) for r in found}


def test_organizers_grant_and_everyone_with_a_role_reads(world):
    service, factory, tokens, ids, event_id = world
    path = f"/v1/events/{event_id}/roles"
    added = _call(service, tokens["orga"], "POST", path, {"email": " Newbie@Example.org ", "role": "coorganizer"})
    assert added.status_code == 201
    assert json.loads(added.get_data()) == {"user_id": ids["newbie"], "email": "newbie@example.org",
                                            "role": "coorganizer"}
    again = _call(service, tokens["admin"], "POST", path, {"email": "newbie@example.org", "role": "coorganizer"})
    assert again.status_code == 200 and json.loads(again.get_data()) == json.loads(added.get_data())
    for who in ("orga", "coorg", "admin", "newbie"):
        listed = json.loads(_call(service, tokens[who], "GET", path).get_data())
        assert {(r["user_id"], r["role"]) for r in listed["data"]} == _roles(factory, event_id)
        assert listed["next_cursor"] is None
    _refused(403, "forbidden", service, tokens["stranger"], "GET", path)
    for who in ("coorg", "stranger", "newbie"):  # co-organizers may not change roles
        _refused(403, "forbidden", service, tokens[who], "POST", path, {"email": "stranger@example.org",
                                                                     "role": "coorganizer"})
        _refused(403, "forbidden", service, tokens[who], "DELETE", f"{path}/{ids['newbie']}")
    _refused(404, "user_not_found", service, tokens["orga"], "POST", path, {"email": "nobody@example.org",
                                                                    "role": "organizer"})
    _refused(404, "event_not_found", service, tokens["orga"], "GET", f"/v1/events/{event_id + 99}/roles")
    for bad in (None, [], "x", {"email": "stranger@example.org"}, {"email": "stranger@example.org", "role": "boss"},
                {"email": 3, "role": "organizer"}, {"email": "", "role": "organizer"},
                {"email": "stranger@example.org", "role": "organizer", "extra": 1}):
        _refused(400, "invalid_request", service, tokens["orga"], "POST", path, bad)


def test_removing_roles_keeps_an_organizer(world):
    service, factory, tokens, ids, event_id = world
    path = f"/v1/events/{event_id}/roles"
    _refused(409, "last_organizer", service, tokens["orga"], "DELETE", f"{path}/{ids['orga']}")
    _refused(409, "last_organizer", service, tokens["admin"], "DELETE", f"{path}/{ids['orga']}?role=organizer")
    _refused(404, "role_not_found", service, tokens["orga"], "DELETE", f"{path}/{ids['stranger']}")
    _refused(404, "role_not_found", service, tokens["orga"], "DELETE", f"{path}/{ids['coorg']}?role=organizer")
    _refused(400, "invalid_parameter", service, tokens["orga"], "DELETE", f"{path}/{ids['coorg']}?role=boss")
    # promote the co-organizer: now the first organizer may go, roles of every kind at once
    assert _call(service, tokens["orga"], "POST", path, {"email": "coorg@example.org", "role": "organizer"}) \
        .status_code == 201
    assert _call(service, tokens["orga"], "DELETE", f"{path}/{ids['orga']}").status_code == 204
    assert _roles(factory, event_id) == {(ids["coorg"], ROLE_ORGANIZER), (ids["coorg"], ROLE_COORGANIZER)}
    # the co-organizer role of the last organizer may go; then the organizer role may not
    assert _call(service, tokens["coorg"], "DELETE", f"{path}/{ids['coorg']}?role=coorganizer").status_code == 204
    _refused(409, "last_organizer", service, tokens["coorg"], "DELETE", f"{path}/{ids['coorg']}")
    assert _roles(factory, event_id) == {(ids["coorg"], ROLE_ORGANIZER)}


def test_the_cli_grants_and_revokes_through_the_same_rules(world, capsys):
    _, factory, _, ids, event_id = world
    args = ["--email", "newbie@example.org", "--event-id", str(event_id)]
    assert cli.main(["grant", *args, "--role", "organizer"]) == 0
    assert cli.main(["grant", *args, "--role", "organizer"]) == 0  # a second grant is no error
    assert "already organizer" in capsys.readouterr().out
    assert cli.main(["revoke", "--email", "orga@example.org", "--event-id", str(event_id)]) == 0
    assert cli.main(["revoke", *args]) == 1  # the last organizer now
    assert "last organizer" in capsys.readouterr().err
    assert cli.main(["grant", "--email", "nobody@example.org", "--event-id", str(event_id)]) == 1
    assert cli.main(["grant", *args[:2], "--event-id", str(event_id + 99)]) == 1
    assert (ids["newbie"], ROLE_ORGANIZER) in _roles(factory, event_id)


# --- concurrency (PostgreSQL: the database production runs on, where write skew is possible) ---------------------

@pytest.fixture
def pg_event(postgres_url):
    upgrade_to_head(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    with factory() as session:
        a, b = User(email="a@example.org", password_hash="x"), User(email="b@example.org", password_hash="x")
        event = Event(name="E")
        session.add_all([a, b, event])
        session.flush()
        session.add_all([EventRole(user_id=u.id, event_id=event.id, role=ROLE_ORGANIZER) for u in (a, b)])
        session.commit()
        yield engine, factory, event.id, a.id, b.id
    engine.dispose()


def _organizers(factory, event_id: int) -> int:
    with factory() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(EventRole).where(
            EventRole.event_id == event_id, EventRole.role == ROLE_ORGANIZER))


def test_two_organizers_removing_each_other_leave_one(pg_event):
    """A removes B and has not committed yet; B's removal of A must wait for it, then see B gone and refuse."""
    engine, factory, event_id, a, b = pg_event
    first = factory()
    assert event_roles.revoke(first, event_id, b) == 1  # uncommitted: holds the event's lock
    outcome: list[object] = []

    def second() -> None:
        with factory() as session:
            try:
                outcome.append(event_roles.revoke(session, event_id, a))
                session.commit()
            except event_roles.LastOrganizer as exc:
                outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    deadline = time.monotonic() + 20
    with engine.connect() as conn:  # until the second removal waits on a lock (or has ended, wrongly)
        while not outcome and not conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).scalar():
            assert time.monotonic() < deadline, "the second removal neither waited nor ended"
            time.sleep(0.01)
            conn.rollback()
    first.commit()
    first.close()
    thread.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], event_roles.LastOrganizer), outcome
    assert _organizers(factory, event_id) == 1


def test_concurrent_removals_never_leave_no_organizer(pg_event):
    """Both at once, many times, released together: every round ends with exactly one organizer."""
    _, factory, event_id, a, b = pg_event
    for _ in range(15):
        barrier, results = threading.Barrier(2), []

        def remove(user_id: int, barrier: threading.Barrier = barrier, results: list = results) -> None:
            with factory() as session:
                barrier.wait(10)
                try:
                    event_roles.revoke(session, event_id, user_id)
                    session.commit()
                    results.append("removed")
                except event_roles.LastOrganizer:
                    results.append("refused")

        threads = [threading.Thread(target=remove, args=(u,)) for u in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(results) == ["refused", "removed"]
        assert _organizers(factory, event_id) == 1
        with factory() as session:  # both organizers again for the next round
            held = {r.user_id for r in session.scalars(sa.select(EventRole).where(EventRole.event_id == event_id))}
            session.add_all(EventRole(user_id=u, event_id=event_id, role=ROLE_ORGANIZER) for u in {a, b} - held)
            session.commit()
