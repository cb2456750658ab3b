"""The webhooks service's logic against a real database and a real HTTP receiver: one row per event and endpoint,
signed attempts, retries, fencing, the guard at delivery time, redirects and timeouts."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from standardwebhooks.webhooks import Webhook

from services.webhooks import endpoints, outbox
from services.webhooks.courier import Courier
from services.webhooks.settings import WebhookSettings
from shared import contracts
from shared.address_guard import AddressGuard
from shared.models.base import utcnow
from shared.models.webhooks import WebhookDelivery, WebhookEndpoint, reseal_secrets
from tests.support.webhook_receiver import WebhookReceiver


def _settings(**overrides: object) -> WebhookSettings:
    base = dict(allow_hosts=("127.0.0.1",), timeout=2.0, schedule=(60.0,), retry_every=60.0, retry_window=3600.0)
    return WebhookSettings(**{**base, **overrides})


def _payload(task_id: str = "t-1", event_id: int | None = 7) -> dict:
    return {"schema_version": 1, "task_id": task_id, "event_id": event_id,
            "requested_by": {"id": 1, "email": "o@example.org"}, "occurred_at": "2026-12-02T06:00:00Z",
            "code": "boom", "message": "it broke"}


@pytest.fixture
def hook(session_factory):
    """(session factory, guard, create(url, events, event_id) -> endpoint record with its secret), on SQLite and
    PostgreSQL."""
    guard = AddressGuard(["127.0.0.1"], what="webhook URL")

    def create(url: str, events: tuple[str, ...] = ("export.failed",), event_id: int | None = 7) -> dict:
        with session_factory() as session:
            return endpoints.create(session, guard, {"url": url, "events": list(events), "event_id": event_id},
                                    created_by=1)

    return session_factory, guard, create


def _rows(factory) -> list[WebhookDelivery]:
    with factory() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_one_row_per_event_and_endpoint_however_often_the_event_arrives(hook):
    factory, _, create = hook
    mine, everything, other_event = create("http://127.0.0.1:1/a"), create("http://127.0.0.1:1/b", event_id=None), \
        create("http://127.0.0.1:1/c", event_id=8)
    create("http://127.0.0.1:1/d", events=("export.completed",))  # another type
    for _ in range(3):
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
    rows = _rows(factory)
    assert sorted(r.endpoint_id for r in rows) == sorted([mine["id"], everything["id"]])
    assert other_event["id"] not in {r.endpoint_id for r in rows}
    assert len({r.message_id for r in rows}) == 2
    body = json.loads(rows[0].body)
    assert body == {"type": "export.failed", "timestamp": "2026-12-02T06:00:00Z", "data": _payload()}


def test_a_delivery_is_signed_and_recorded_delivered(hook):
    factory, guard, create = hook
    with closing(WebhookReceiver()) as receiver:
        endpoint = create(receiver.url)
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
        assert Courier(factory, _settings(), guard).run_due() == 1
        (got,) = receiver.requests()
        assert Webhook(endpoint["secret"]).verify(got.body, got.headers)["data"]["task_id"] == "t-1"
        (row,) = _rows(factory)
        assert (row.state, row.attempts, row.last_status, got.webhook_id) == ("delivered", 1, 200, row.message_id)
        assert Courier(factory, _settings(), guard).run_due() == 0  # nothing due any more


def test_a_refusing_receiver_gets_retries_with_the_same_id_then_failed(hook):
    factory, guard, create = hook
    with closing(WebhookReceiver(status=500)) as receiver:
        create(receiver.url)
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
        courier = Courier(factory, _settings(), guard)
        (row,) = _rows(factory)
        assert courier.deliver(row.id) == outbox.PENDING
        (row,) = _rows(factory)
        assert (row.last_status, row.attempts) == (500, 1) and "HTTP 500: receiver says no" in row.last_error
        assert row.next_attempt_at >= row.first_attempt_at + timedelta(seconds=59)
        assert courier.deliver(row.id) is None  # not due yet
        with factory() as session:  # time passes: the window is over at the next failure
            session.get(WebhookDelivery, row.id).next_attempt_at = utcnow()
            session.commit()
        assert Courier(factory, _settings(retry_window=0), guard).deliver(row.id) == outbox.FAILED
        (row,) = _rows(factory)
        assert row.state == "failed" and row.attempts == 2 and row.last_error.startswith("gave up after 2")
        assert {r.webhook_id for r in receiver.requests()} == {row.message_id} and len(receiver.requests()) == 2


def test_a_claim_is_fenced_and_an_expired_one_is_taken_over_with_the_same_id(hook):
    factory, _, create = hook
    create("http://127.0.0.1:1/a")
    with factory() as session:
        outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
    (row,) = _rows(factory)
    now = utcnow()
    with factory() as session:
        first = outbox.claim(session, row.id, now=now, lease=30)
        assert first is not None and outbox.claim(session, row.id, now=now, lease=30) is None
        # the first sender was killed: after its lease, another takes over
        second = outbox.claim(session, row.id, now=now + timedelta(seconds=31), lease=30)
        assert second is not None and second.message_id == first.message_id and second.token == 2
        assert outbox.mark_delivered(session, first, 200, now=now) is False  # the old claim records nothing
        assert outbox.mark_delivered(session, second, 200, now=now) is True


def test_the_guard_runs_again_at_delivery_time(hook):
    factory, _, create = hook
    with closing(WebhookReceiver()) as receiver:
        create(receiver.url)  # allowed when registered
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
        strict = AddressGuard([], what="webhook URL")  # the allow-list changed since
        (row,) = _rows(factory)
        assert Courier(factory, _settings(), strict).deliver(row.id) == outbox.PENDING
        assert receiver.requests() == []
        assert "address guard" in _rows(factory)[0].last_error


def test_redirects_are_not_followed(hook):
    factory, guard, create = hook
    with closing(WebhookReceiver()) as elsewhere, closing(WebhookReceiver(302, redirect_to=elsewhere.url)) as hop:
        create(hop.url)
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
        (row,) = _rows(factory)
        assert Courier(factory, _settings(), guard).deliver(row.id) == outbox.PENDING
        assert len(hop.requests()) == 1 and elsewhere.requests() == []
        assert _rows(factory)[0].last_status == 302


def test_a_receiver_that_never_answers_is_a_timeout(hook):
    factory, guard, create = hook
    with closing(WebhookReceiver(hold_first=True)) as receiver:
        create(receiver.url)
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
        (row,) = _rows(factory)
        assert Courier(factory, _settings(timeout=0.5), guard).deliver(row.id) == outbox.PENDING
        assert "timed out" in _rows(factory)[0].last_error


def test_a_deleted_endpoint_gets_nothing_more(hook):
    factory, guard, create = hook
    with closing(WebhookReceiver()) as receiver:
        endpoint = create(receiver.url)
        with factory() as session:
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload(), now=utcnow())
            assert endpoints.delete(session, endpoint["id"]) and endpoints.get(session, endpoint["id"]) is None
            outbox.record_event(session, contracts.EXPORT_FAILED, _payload("t-2"), now=utcnow())
        (row,) = _rows(factory)
        assert Courier(factory, _settings(), guard).deliver(row.id) == outbox.FAILED
        assert receiver.requests() == []


def test_lists_are_newest_first_in_pages(hook):
    factory, _, create = hook
    ids = [create(f"http://127.0.0.1:1/{n}")["id"] for n in range(5)]
    with factory() as session:
        first = endpoints.list_endpoints(session, None, 2, None)
        second = endpoints.list_endpoints(session, None, 2, first["next"])
        third = endpoints.list_endpoints(session, None, 2, second["next"])
        assert [e["id"] for e in first["data"] + second["data"] + third["data"]] == ids[::-1]
        assert third["next"] is None and endpoints.list_endpoints(session, 2, 10, None)["data"] == []


def test_secrets_are_stored_encrypted_and_resealed_with_the_newest_key(hook, monkeypatch):
    factory, _, create = hook
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEYS", "old-passphrase-of-at-least-32-bytes!!")
    secret = create("http://127.0.0.1:1/a")["secret"]
    with factory() as session:
        stored = session.execute(text("SELECT secret FROM webhook_endpoints")).scalar_one()
    assert stored.startswith("enc:v1:") and secret not in stored
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEYS", "new-passphrase-of-at-least-32-bytes!!,"
                                                  "old-passphrase-of-at-least-32-bytes!!")
    with factory() as session:
        assert reseal_secrets(session) == 1
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEYS", "new-passphrase-of-at-least-32-bytes!!")  # the old key can go
    with factory() as session:
        assert session.scalars(select(WebhookEndpoint.secret)).one() == secret
