"""The thin service classes through nameko's ``worker_factory``: entrypoints parse, call the module, answer.

Real database and settings; the dependencies an entrypoint does not use are nameko's stand-ins.
"""

from __future__ import annotations

import json

import pytest
from nameko.testing.services import worker_factory
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway import auth
from services.api_gateway.dependencies import row_reader
from services.api_gateway.quotas import load_quota_settings
from services.api_gateway.service import ApiGatewayService
from services.api_gateway.tasks import create_task
from services.mailer.service import MailerService
from shared.config import load_settings
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.http import ApiError
from shared.models.base import utcnow
from shared.models.events import User
from shared.models.mailer import MailDelivery


@pytest.fixture
def platform(sqlite_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    upgrade_to_head(sqlite_url)
    return make_session_factory(make_engine(sqlite_url)), load_settings()


def _request(method: str, path: str, token: str | None = None, body: object = None) -> Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    return Request(EnvironBuilder(method=method, path=path, headers=headers, data=data).get_environ())


def test_mailer_recent_deliveries_rpc_lists_newest_first_without_bodies(platform):
    factory, _ = platform
    with factory() as session:
        for n in range(3):
            session.add(MailDelivery(dedupe_key=f"k{n}", task_id=f"t{n}", kind="export_completed",
                                     recipient="a@example.org", subject=f"s{n}", state="pending", attempts=n,
                                     next_attempt_at=utcnow(), message="BODY with a signed link"))
        session.commit()
    mailer = worker_factory(MailerService, db=factory)
    rows = mailer.recent_deliveries(2)
    assert [r["task_id"] for r in rows] == ["t2", "t1"]
    assert all("message" not in r and "BODY" not in json.dumps(r) for r in rows)
    assert rows[0]["next_retry_at"] is not None  # pending: waits for a retry
    assert len(mailer.recent_deliveries(10_000)) == 3  # clamped to the log's maximum, never an error


def test_gateway_task_route_answers_the_requester_and_refuses_others(platform):
    factory, settings = platform
    with factory() as session:
        owner, other = User(email="o@example.org", password_hash="x"), User(email="x@example.org", password_hash="y")
        session.add_all([owner, other])
        session.flush()
        task = create_task(session, kind="export", event_id=1, user_id=owner.id, email=owner.email, params={})
        session.commit()
        tokens = {u.email: auth.issue_token(u, settings.token_key, 60) for u in (owner, other)}
        task_id = task.id
    gateway = worker_factory(ApiGatewayService, db=factory, config=settings, quota=load_quota_settings(),
                   reader=row_reader(factory.kw["bind"]))
    answer = gateway.get_task(_request("GET", f"/v1/tasks/{task_id}", tokens["o@example.org"]), task_id)
    assert answer.status_code == 200 and json.loads(answer.get_data())["state"] == "WAITING"
    with pytest.raises(ApiError) as refused:
        gateway.get_task(_request("GET", f"/v1/tasks/{task_id}", tokens["x@example.org"]), task_id)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    with pytest.raises(ApiError) as anonymous:
        gateway.get_task(_request("GET", f"/v1/tasks/{task_id}"), task_id)
    assert anonymous.value.status == 401


def test_gateway_export_route_parses_before_it_authorizes(platform):
    """A bad body is 400 for any logged-in user; the event's rules come after (404 for an event that is not)."""
    factory, settings = platform
    with factory() as session:
        user = User(email="o@example.org", password_hash="x")
        session.add(user)
        session.commit()
        token = auth.issue_token(user, settings.token_key, 60)
    gateway = worker_factory(ApiGatewayService, db=factory, config=settings, quota=load_quota_settings(),
                   reader=row_reader(factory.kw["bind"]))
    with pytest.raises(ApiError) as bad:
        gateway.request_export(_request("POST", "/v1/events/1/export/json", token, {"image": "yes"}), 1, "json")
    assert (bad.value.status, bad.value.code) == (400, "invalid_request")
    with pytest.raises(ApiError) as unknown:
        gateway.request_export(_request("POST", "/v1/events/1/export/json", token, {"image": True}), 1, "json")
    assert (unknown.value.status, unknown.value.code) == (404, "event_not_found")
    with pytest.raises(ApiError) as no_format:
        gateway.request_export(_request("POST", "/v1/events/1/export/docx", token, {}), 1, "docx")
    assert (no_format.value.status, no_format.value.code) == (404, "unknown_format")
