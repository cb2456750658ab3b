"""Gateway logic without a broker: task state machine, option parsing, tokens, event contracts."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from marshmallow import ValidationError

from services.api_gateway import auth
from services.api_gateway.schemas import export_request
from services.api_gateway.tasks import create_task, fail_stale, finish, set_status, task_view
from shared import contracts
from shared.db import make_engine, make_session_factory
from shared.http import ApiError
from shared.models.base import utcnow
from shared.models.events import User
from shared.models.gateway import Task


@pytest.fixture
def db(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory() as session:
        yield session


def _task(db) -> str:
    task = create_task(db, kind="export", event_id=1, user_id=1, email="a@example.org", params={})
    db.commit()
    return task.id


def test_states_only_move_forward(db):
    task_id = _task(db)
    assert set_status(db, task_id, contracts.IN_PROGRESS, progress={"stage": "sessions", "done": 1, "total": 2})
    assert not set_status(db, task_id, contracts.STARTED)  # a late "started" does not undo progress
    db.commit()
    db.expire_all()
    view = task_view(db.get(Task, task_id))
    # Underway is WAITING for HTTP clients (the Open Event frontend polls only while WAITING); the phase is apart.
    assert (view["state"], view["status"], view["progress"]) == (contracts.WAITING, contracts.IN_PROGRESS,
                                                                 {"stage": "sessions", "done": 1, "total": 2})
    assert finish(db, task_id, contracts.SUCCESS, {"size": 1})
    db.commit()
    for state in (contracts.FAILURE, contracts.SUCCESS):
        assert not finish(db, task_id, state, {"size": 2})
    for status in (contracts.STARTED, contracts.IN_PROGRESS):
        assert not set_status(db, task_id, status, progress={"stage": "late", "done": 0, "total": 0})
    db.commit()
    db.expire_all()
    task = db.get(Task, task_id)
    assert (task.state, task.result) == (contracts.SUCCESS, {"size": 1})
    assert "progress" not in task_view(task) and task_view(task)["result"] == {"size": 1}


def test_stale_started_tasks_fail_but_waiting_ones_wait(db):
    waiting, started = _task(db), _task(db)
    set_status(db, started, contracts.STARTED)
    db.commit()
    assert fail_stale(db, utcnow() - timedelta(minutes=5)) == 0
    assert fail_stale(db, utcnow() + timedelta(seconds=1)) == 1
    db.commit()
    db.expire_all()
    assert db.get(Task, waiting).state == contracts.WAITING
    assert db.get(Task, started).result["code"] == "worker_lost"


def test_export_options():
    assert export_request(None)[0] == {"image": False, "video": False, "document": False, "audio": False}
    assert export_request({"image": True})[0]["image"] is True
    for bad in ({"image": "true"}, {"image": 0}, {"other": True}, [], "x", 3):
        with pytest.raises(ApiError) as err:
            export_request(bad)
        assert err.value.status == 400


def test_publication_takes_json_booleans_only():
    from services.api_gateway.schemas import PublicationSchema, parse

    assert parse(PublicationSchema(), {"published": True}) == {"published": True}
    assert parse(PublicationSchema(), {"published": False}) == {"published": False}
    # 0.0 was taken as false, 1 as true (the contract test's negative data got 200)
    for bad in ({"published": 0.0}, {"published": 1}, {"published": 0}, {"published": "true"}, {"published": None},
                {}, [], None):
        with pytest.raises(ApiError) as err:
            parse(PublicationSchema(), bad)
        assert (err.value.status, err.value.code) == (400, "invalid_request"), bad


def test_tokens_roundtrip_and_refuse_tampering():
    key, other = b"k" * 32, b"o" * 32
    user = User(id=42, email="a@example.org", password_hash="scrypt:1:8:1$salt$hash")
    token = auth.issue_token(user, key, ttl=60)
    assert auth.read_token(f"Bearer {token}", key).user_id == 42
    assert auth.read_token(f"JWT {token}", key).user_id == 42
    for header in (None, "", "Basic abc", f"Bearer {token}x", f"Token {token}"):
        with pytest.raises(ApiError) as err:
            auth.read_token(header, key)
        assert err.value.status == 401
    with pytest.raises(ApiError):
        auth.read_token(f"Bearer {token}", other)
    expired = auth.issue_token(user, key, ttl=-1)
    with pytest.raises(ApiError) as err:
        auth.read_token(f"Bearer {expired}", key)
    assert err.value.code == "token_expired"


def test_a_token_verified_while_valid_is_refused_once_it_expires(monkeypatch):
    # Verified signatures are remembered (polls repeat one token); the expiry is decided on every request.
    key = b"k" * 32
    user = User(id=7, email="a@example.org", password_hash="scrypt:1:8:1$salt$hash")
    token = auth.issue_token(user, key, ttl=30)
    assert auth.read_token(f"Bearer {token}", key).user_id == 7
    later = time.time() + 31
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(ApiError) as err:
        auth.read_token(f"Bearer {token}", key)
    assert (err.value.status, err.value.code) == (401, "token_expired")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):  # a refusal is never remembered as a pass
        with pytest.raises(ApiError) as err:
            auth.read_token(f"Bearer {forged}", key)
        assert err.value.code == "invalid_token"


def test_payloads_are_validated_at_the_source():
    who = {"id": 1, "email": "a@example.org"}
    payload = contracts.make_payload(contracts.EXPORT_PROGRESS, task_id="t", event_id=1, requested_by=who, stage="x",
                                     done=1,
                                     total=None)
    assert payload["schema_version"] == contracts.SCHEMA_VERSION and payload["occurred_at"].endswith("Z")
    with pytest.raises(ValidationError):
        contracts.make_payload(contracts.EXPORT_PROGRESS, task_id="t", event_id=1, requested_by=who, stage="x")
    # consumers ignore fields added later by producers
    assert contracts.load_payload(contracts.EXPORT_STARTED, {**payload, "future_field": 1})["task_id"] == "t"


def test_import_progress_names_the_file_and_the_phase():
    who = {"id": 1, "email": "a@example.org"}
    payload = contracts.make_payload(contracts.IMPORT_PROGRESS, task_id="t", event_id=None, requested_by=who,
                                     stage="sessions",
                                     done=54, total=108, phase="validate")
    assert contracts.load_payload(contracts.IMPORT_PROGRESS, payload)["phase"] == "validate"
    with pytest.raises(ValidationError):
        contracts.make_payload(contracts.IMPORT_PROGRESS, task_id="t", event_id=None, requested_by=who,
                               stage="sessions", done=1,
                               total=2, phase=3)
