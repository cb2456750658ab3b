"""Cursor pagination of every list, on SQLite and PostgreSQL: each item exactly once across pages (also when rows
arrive between two fetches, and when many rows share one ``created_at``), cursors that cannot be forged or moved to
another list, the documented 400s. The gateway's lists through its entrypoints (``worker_factory``); the mailer's
and storage's lists (paged where they live) through their own functions."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway import auth
from services.api_gateway.dependencies import row_reader
from services.api_gateway.quotas import load_quota_settings
from services.api_gateway.service import ApiGatewayService
from services.api_gateway.tasks import create_task, finish
from services.mailer.service import MailerService
from services.storage.records import admin as records
from services.storage.records.registry import BackendSpec
from shared import contracts, pagination
from shared.config import load_settings
from shared.db import make_engine, make_session_factory
from shared.http import ApiError
from shared.models.base import utcnow
from shared.models.events import ROLE_ORGANIZER, Event, EventRole, User
from shared.models.gateway import Task
from shared.models.mailer import MailDelivery
from shared.models.storage import StorageBackendRecord
from shared.pagination import InvalidCursor, InvalidLimit

KEY = b"k" * 32


# --- the cursor itself -------------------------------------------------------------------------------------------

def test_a_cursor_round_trips_its_sort_key():
    when = utcnow()
    cursor = pagination.encode_cursor("tasks:1", [when, "abc", 7, None], KEY)
    assert pagination.decode_cursor("tasks:1", cursor, KEY) == [when, "abc", 7, None]


def test_a_cursor_is_bound_to_its_list_and_key_and_cannot_be_edited():
    cursor = pagination.encode_cursor("exports:5", [utcnow(), "t"], KEY)
    payload, mac = cursor.split(".")
    forged_payload = pagination.encode_cursor("exports:5", [utcnow(), "u"], b"").split(".")[0]
    for bad, name, key in [(cursor, "exports:6", KEY),  # another list
                           (cursor, "exports:5", b"o" * 32),  # another deployment's key
                           (f"{forged_payload}.{mac}", "exports:5", KEY),  # changed values, old MAC
                           (payload, "exports:5", KEY), (cursor + "x", "exports:5", KEY), ("", "exports:5", KEY),
                           ("...", "exports:5", KEY), ("é.é", "exports:5", KEY), ("a" * 5000, "exports:5", KEY)]:
        with pytest.raises(InvalidCursor):
            pagination.decode_cursor(name, bad, key)


@pytest.mark.parametrize("raw", ["0", "201", "-1", "x", "1.5", " 3", "1e2", "٣", "9" * 30])
def test_bad_limits_are_refused(raw):
    with pytest.raises(InvalidLimit):
        pagination.parse_limit(raw)


def test_limits_default_and_bounds():
    assert pagination.parse_limit(None) == pagination.parse_limit("") == pagination.DEFAULT_PAGE_SIZE == 50
    assert pagination.parse_limit("1") == 1 and pagination.parse_limit("200") == pagination.MAX_PAGE_SIZE == 200


# --- the gateway's lists -----------------------------------------------------------------------------------------

@pytest.fixture
def gateway(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    factory = make_session_factory(make_engine(database_url))
    settings = load_settings()
    with factory() as session:
        users = [User(email=f"{name}@example.org", password_hash="x", is_admin=name == "admin")
                 for name in ("owner", "other", "admin")]
        session.add_all(users)
        session.commit()
        tokens = {u.email.split("@")[0]: auth.issue_token(u, settings.token_key, 600) for u in users}
        ids = {u.email.split("@")[0]: u.id for u in users}
    service = worker_factory(ApiGatewayService, db=factory, config=settings, quota=load_quota_settings(),
                   reader=row_reader(factory.kw["bind"]))
    return service, factory, tokens, ids, settings


def _request(path: str, token: str, method: str = "GET", body: object = None) -> Request:
    data = json.dumps(body).encode() if body is not None else None
    return Request(EnvironBuilder(method=method, path=path, headers={"Authorization": f"Bearer {token}"},
                                  data=data).get_environ())


def _answer(response) -> dict:
    return json.loads(response.get_data())


def _pages(route, path: str, token: str, between=None) -> list[list[dict]]:
    """Every page of a list, following ``next_cursor`` (and checking the ``Link`` header says the same)."""
    pages, url = [], path
    while True:
        response = route(_request(url, token))
        assert response.status_code == 200
        body = _answer(response)
        pages.append(body["data"])
        if body["next_cursor"] is None:
            assert "Link" not in response.headers
            return pages
        link = response.headers["Link"]
        target = urlsplit(link[1:link.index(">")])
        assert link.endswith('; rel="next"') and target.scheme == "http"
        assert parse_qs(target.query)["cursor"] == [body["next_cursor"]]
        url = f"{target.path}?{target.query}"  # filters and limit carried over
        if between:
            between()


def _tasks(factory, user_id: int, n: int, kind: str = "export", event_id: int | None = 1, same_time: bool = False):
    when = utcnow()
    with factory() as session:
        made = [create_task(session, kind=kind, event_id=event_id, user_id=user_id, email="x@example.org", params={})
                for _ in range(n)]
        for task in made:
            if same_time:  # many rows on one created_at: only the id tells them apart
                task.created_at = when
        session.commit()
        return [t.id for t in made]


@pytest.mark.parametrize("same_time", [False, True])
def test_tasks_come_once_each_newest_first_while_new_ones_arrive(gateway, same_time):
    service, factory, tokens, ids, _ = gateway
    first = _tasks(factory, ids["owner"], 7, same_time=same_time)
    _tasks(factory, ids["other"], 3)  # someone else's: never listed
    arrivals = []
    pages = _pages(service.list_tasks, "/v1/tasks?limit=3", tokens["owner"],
                   between=lambda: arrivals.extend(_tasks(factory, ids["owner"], 2)))
    seen = [t["id"] for page in pages for t in page]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(seen) == sorted(first) and len(set(seen)) == len(seen)  # every old task exactly once
    with factory() as session:
        stamps = [session.get(Task, t).created_at for t in seen]
    assert stamps == sorted(stamps, reverse=True)
    listed = _answer(service.list_tasks(_request("/v1/tasks?limit=200", tokens["owner"])))["data"]
    assert {t["id"] for t in listed} == set(first) | set(arrivals)  # the newcomers are on a fresh first page


def test_a_task_item_is_the_task_view_plus_its_url(gateway):
    service, factory, tokens, ids, _ = gateway
    (task_id,) = _tasks(factory, ids["owner"], 1)
    item = _answer(service.list_tasks(_request("/v1/tasks", tokens["owner"])))["data"][0]
    single = _answer(service.get_task(_request(f"/v1/tasks/{task_id}", tokens["owner"]), task_id))
    assert item == {**single, "task_url": f"/v1/tasks/{task_id}"}


def test_task_filters(gateway):
    service, factory, tokens, ids, _ = gateway
    exports_1 = _tasks(factory, ids["owner"], 2, event_id=1)
    exports_2 = _tasks(factory, ids["owner"], 2, event_id=2)
    imports = _tasks(factory, ids["owner"], 2, kind="import", event_id=None)
    with factory() as session:
        finish(session, exports_2[0], contracts.SUCCESS, {"size": 1})
        finish(session, imports[0], contracts.FAILURE, {"code": "x", "message": "y"})
        session.commit()

    def listed(query: str) -> set[str]:
        pages = _pages(service.list_tasks, f"/v1/tasks?limit=1&{query}", tokens["owner"])
        return {t["id"] for page in pages for t in page}

    assert listed("kind=export") == set(exports_1 + exports_2)
    assert listed("kind=import") == set(imports)
    assert listed("event_id=2") == set(exports_2)
    assert listed("state=SUCCESS") == {exports_2[0]}
    assert listed("state=WAITING&kind=import") == {imports[1]}
    assert listed("kind=export&state=FAILURE") == set()
    for bad in ("kind=upload", "state=STARTED", "state=success", "event_id=x", "event_id=-1", "event_id=0",
                "event_id=" + "9" * 30, "limit=0", "limit=201", "limit=ten"):
        with pytest.raises(ApiError) as err:
            service.list_tasks(_request(f"/v1/tasks?{bad}", tokens["owner"]))
        assert (err.value.status, err.value.code) == (400, "invalid_parameter"), bad


def test_a_cursor_works_only_for_the_list_it_was_made_for(gateway):
    service, factory, tokens, ids, settings = gateway
    _tasks(factory, ids["owner"], 3, kind="export")
    _tasks(factory, ids["owner"], 3, kind="import", event_id=None)
    cursor = _answer(service.list_tasks(_request("/v1/tasks?limit=1&kind=export", tokens["owner"])))["next_cursor"]
    assert service.list_tasks(_request(f"/v1/tasks?limit=1&kind=export&cursor={cursor}", tokens["owner"])).status_code \
        == 200
    forged = pagination.encode_cursor("tasks:1:None:None:None", [utcnow(), "z"], b"")  # the right shape, no key
    for path, token in [(f"/v1/tasks?kind=import&cursor={cursor}", tokens["owner"]),  # another filter
                        (f"/v1/tasks?cursor={cursor}", tokens["owner"]),
                        (f"/v1/tasks?kind=export&cursor={cursor}", tokens["other"]),  # another user
                        (f"/v1/import-jobs?cursor={cursor}", tokens["owner"]),  # another list
                        (f"/v1/tasks?cursor={forged}", tokens["owner"]),
                        ("/v1/tasks?cursor=garbage", tokens["owner"])]:
        route = service.list_imports if path.startswith("/v1/import-jobs") else service.list_tasks
        with pytest.raises(ApiError) as err:
            route(_request(path, token))
        assert (err.value.status, err.value.code) == (400, "invalid_cursor"), path
    # A well-signed cursor of the wrong shape (a bug elsewhere, a future version) is refused the same way.
    odd = pagination.encode_cursor(f"events:{ids['owner']}", ["not a time", 1], settings.cursor_key)
    with pytest.raises(ApiError) as err:
        service.list_events(_request(f"/v1/events?cursor={odd}", tokens["owner"]))
    assert err.value.code == "invalid_cursor"


def _events(factory, owner: int | None, n: int) -> list[int]:
    base = utcnow()
    with factory() as session:
        events = [Event(name=f"E{i}", created_at=base + timedelta(microseconds=i)) for i in range(n)]
        session.add_all(events)
        session.flush()
        if owner is not None:
            session.add_all(EventRole(user_id=owner, event_id=e.id, role=ROLE_ORGANIZER) for e in events)
        session.commit()
        return [e.id for e in events]


def test_events_page_for_organizers_and_admins(gateway):
    service, factory, tokens, ids, _ = gateway
    mine = _events(factory, ids["owner"], 5)
    theirs = _events(factory, ids["other"], 2)
    pages = _pages(service.list_events, "/v1/events?limit=2", tokens["owner"],
                   between=lambda: _events(factory, ids["owner"], 1))
    assert [[e["id"] for e in p] for p in pages] == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
    everything = [e["id"] for p in _pages(service.list_events, "/v1/events?limit=3", tokens["admin"]) for e in p]
    assert set(mine + theirs) <= set(everything) and len(everything) == len(set(everything))


def test_exports_and_imports_page(gateway):
    service, factory, tokens, ids, _ = gateway
    (event_id,) = _events(factory, ids["owner"], 1)
    exports = _tasks(factory, ids["owner"], 5, event_id=event_id)
    _tasks(factory, ids["owner"], 2, event_id=event_id + 1)
    pages = _pages(lambda r: service.list_exports(r, event_id), f"/v1/events/{event_id}/exports?limit=2",
                   tokens["owner"], between=lambda: _tasks(factory, ids["owner"], 1, event_id=event_id))
    assert [t["task_id"] for p in pages for t in p] == exports[::-1]
    imports = _tasks(factory, ids["owner"], 4, kind="import", event_id=None)
    pages = _pages(service.list_imports, "/v1/import-jobs?limit=3", tokens["owner"])
    assert [t["task_id"] for p in pages for t in p] == imports[::-1]


def test_roles_page_in_the_order_granted(gateway):
    service, factory, tokens, ids, _ = gateway
    (event_id,) = _events(factory, ids["owner"], 1)
    with factory() as session:
        extra = [User(email=f"co{i}@example.org", password_hash="x") for i in range(4)]
        session.add_all(extra)
        session.commit()
    granted = []

    def grant_one():
        email = f"late{len(granted)}@example.org"
        with factory() as session:
            session.add(User(email=email, password_hash="x"))
            session.commit()
        response = service.event_roles(_request(f"/v1/events/{event_id}/roles", tokens["owner"], "POST",
                                                {"email": email, "role": "coorganizer"}), event_id)
        assert response.status_code == 201
        granted.append(email)

    for user in extra:
        assert service.event_roles(_request(f"/v1/events/{event_id}/roles", tokens["owner"], "POST",
                                            {"email": user.email, "role": "coorganizer"}), event_id).status_code == 201
    pages = _pages(lambda r: service.event_roles(r, event_id), f"/v1/events/{event_id}/roles?limit=2",
                   tokens["owner"], between=grant_one)
    emails = [r["email"] for p in pages for r in p]
    # granted later, so listed later: the ones granted before the last page was read are on it
    assert emails[:5] == ["owner@example.org", *(u.email for u in extra)]
    assert emails[5:] == granted[:len(emails) - 5] and len(set(emails)) == len(emails)


# --- the mailer's and storage's lists, paged where they live ------------------------------------------------------

def test_mail_log_pages_by_id_newest_first(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    factory = make_session_factory(make_engine(database_url))

    def add(n: int, tag: str) -> None:
        with factory() as session:
            session.add_all(MailDelivery(dedupe_key=f"{tag}{i}", task_id=f"{tag}{i}", kind="export_completed",
                                         recipient="a@example.org", subject="s", state="sent") for i in range(n))
            session.commit()

    add(5, "old")
    mailer = worker_factory(MailerService, db=factory)
    seen, before = [], None
    while True:
        rows = mailer.recent_deliveries(3, before)  # a page and one more: whether a next page exists
        seen += [r["task_id"] for r in rows[:2]]
        if len(rows) <= 2:
            break
        before = rows[1]["id"]
        add(1, f"new{len(seen)}-")
    assert seen == [f"old{i}" for i in range(4, -1, -1)]


def test_storage_backend_lists_page_where_they_live(session_factory):
    with session_factory() as session:
        for name in ("zeta", "alpha", "mid", "off"):
            session.add(StorageBackendRecord(storage_backend="local", storage_backend_id=name, config={},
                                             active=name != "off"))
        session.commit()
        spec = BackendSpec(identifier="default", kind="local", config={}, token=None, keep_days=0, active=True)

        def all_pages(fetch, key, size: int = 2) -> list[str]:
            seen, after = [], None
            while True:
                rows = fetch(size + 1, after)
                seen += [r["storage_backend_id"] for r in rows[:size]]
                if len(rows) <= size:
                    return seen
                after = key(rows[size - 1])

        assert all_pages(lambda n, a: records.list_records(session, n, a), lambda r: r["storage_backend_id"]) \
            == ["zeta", "alpha", "mid", "off"]  # creation order
        assert all_pages(lambda n, a: records.choices(session, spec, n, a),
                         lambda c: "" if c["default"] else c["storage_backend_id"]) \
            == ["default", "alpha", "mid", "zeta"]  # the default first, then the active ones by identifier
        assert all_pages(lambda n, a: records.choices(session, spec, n, a),
                         lambda c: "" if c["default"] else c["storage_backend_id"], size=1) \
            == ["default", "alpha", "mid", "zeta"]
        assert [c["storage_backend_id"] for c in records.choices(session, spec)] == ["default", "alpha", "mid", "zeta"]
