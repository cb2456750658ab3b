"""Webhooks end to end: the real services and RabbitMQ, real HTTP receivers on 127.0.0.1 (allow-listed).

(a) one signed delivery per finished export and import, verifiable with the secret, a redelivered AMQP event adds
nothing; (b) the webhooks service killed while a receiver holds its first delivery open: after the restart the
receiver has one webhook-id per job and the log says delivered; (c) a receiver answering 500 gets the retries of the
(short) schedule, then the log says failed; (d) who may register what, and the URL guard. Events published before
the service ever ran are kept.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, closing

import pytest
import requests
from nameko.standalone.events import event_dispatcher
from standardwebhooks.webhooks import Webhook

from services.api_gateway.dependencies import WEBHOOK_QUEUES
from shared import contracts
from shared.models.webhooks import WebhookEndpoint
from shared.webhook_signature import new_secret
from tests.e2e.test_export_e2e import export
from tests.support.e2e import Client, stack_for
from tests.support.import_helpers import IMPORT_PATH
from tests.support.rabbit import queue_info
from tests.support.webhook_receiver import WebhookReceiver

TIMEOUT = 4  # WEBHOOK_TIMEOUT of this stack: a killed sender's delivery is due again after 2 x 4 + 5 s


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with ExitStack() as stack:
        receivers = {name: stack.enter_context(closing(WebhookReceiver(**opts))) for name, opts in
                     {"ok": {}, "held": {"hold_first": True}, "refusing": {"status": 500}}.items()}
        allow = ",".join(f"127.0.0.1:{r.port}" for r in receivers.values())
        run = stack.enter_context(stack_for(
            tmp_path_factory.mktemp("webhooks"), {"admin": True, "organizer": False, "other": False},
            WEBHOOK_ALLOW_HOSTS=allow, WEBHOOK_TIMEOUT=str(TIMEOUT), WEBHOOK_RETRY_SCHEDULE="1,1",
            WEBHOOK_RETRY_EVERY="1", WEBHOOK_RETRY_WINDOW="4"))
        run.own_event = run.event("organizer", sessions=3)
        run.other_event = run.event("other", sessions=1)
        run.stack_ = run.start()
        run.receivers = receivers
        yield run


def register(client: Client, url: str, events: list[str], event_id: int | None) -> dict:
    r = client.post("/v1/webhooks", json={"url": url, "events": events, "event_id": event_id})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["secret"].startswith("whsec_") and hook["url"] == url and hook["active"] is True
    return hook


def finished(client: Client, task_url: str) -> dict:
    task = client.wait_task(task_url, timeout=120)
    assert task["state"] == "SUCCESS", task
    return task


def deliveries(client: Client, hook_id: int) -> list[dict]:
    r = client.get(f"/v1/webhooks/{hook_id}/deliveries", params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_log(client: Client, hook_id: int, until, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        log = deliveries(client, hook_id)
        if until(log):
            return log
        assert time.monotonic() < deadline, f"deliveries of webhook {hook_id} still {log}"
        time.sleep(0.1)


def test_one_signed_delivery_per_finished_export_and_import(system):
    admin, organizer = system.client("admin"), system.client("organizer")
    receiver = system.receivers["ok"]
    hook = register(admin, receiver.url, ["export.completed", "import.completed"], None)
    task = finished(organizer, export(organizer, system.own_event))
    export_id = task["id"]
    data = requests.get(task["result"]["download_url"], timeout=60).content
    r = organizer.post(IMPORT_PATH, files={"file": ("event.zip", data)})
    assert r.status_code == 202, r.text
    imported = finished(organizer, r.json()["task_url"])
    import_id = imported["id"]

    got = receiver.wait_for(lambda seen: {s.task_id for s in seen} >= {export_id, import_id})
    by_task = {s.task_id: s for s in got}
    verifier = Webhook(hook["secret"])
    for task_id, kind in ((export_id, "export.completed"), (import_id, "import.completed")):
        request = by_task[task_id]
        message = verifier.verify(request.body, request.headers)  # raises unless signed with this secret
        assert message["type"] == kind and message["data"]["task_id"] == task_id
        assert set(message) == {"type", "timestamp", "data"} and message["timestamp"].endswith("Z")
        assert request.headers["content-type"] == "application/json" and request.webhook_id.startswith("msg_")
    assert by_task[export_id].message["data"]["sha256"] == task["result"]["sha256"]
    assert by_task[import_id].message["data"]["id"] == imported["result"]["id"]

    log = wait_log(admin, hook["id"], lambda rows: len(rows) == 2 and all(d["state"] == "delivered" for d in rows))
    assert {d["id"] for d in log} == {by_task[export_id].webhook_id, by_task[import_id].webhook_id}
    assert all(d["attempts"] == 1 and d["last_status"] == 200 and d["delivered_at"] for d in log)

    # The broker delivers the export's event again: nothing new. A fresh event after it shows it was consumed.
    dispatch = event_dispatcher({"AMQP_URI": system.env.env["AMQP_URI"], "serializer": "json"})
    again = by_task[export_id].message["data"]
    dispatch(contracts.EXPORTER, contracts.EXPORT_COMPLETED, again)
    dispatch(contracts.EXPORTER, contracts.EXPORT_COMPLETED, {**again, "task_id": "marker-after-the-duplicate"})
    receiver.wait_for(lambda seen: any(s.task_id == "marker-after-the-duplicate" for s in seen))
    wait_log(admin, hook["id"], lambda rows: len(rows) == 3)
    assert len(receiver.requests(lambda s: s.task_id == export_id)) == 1
    assert admin.request("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 204


def test_a_deleted_archive_is_announced_as_object_expired(system):
    organizer, receiver = system.client("organizer"), system.receivers["ok"]
    hook = register(organizer, receiver.url, ["object.expired"], system.own_event)
    task = finished(organizer, export(organizer, system.own_event))
    assert organizer.request("DELETE", f"/v1/events/{system.own_event}/exports/{task['id']}").status_code == 204
    def expired(s) -> bool:
        return s.message["type"] == "object.expired" and s.task_id == task["id"]

    receiver.wait_for(lambda seen: any(expired(s) for s in seen))
    (got,) = receiver.requests(expired)
    message = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert message["data"]["reason"] == "deleted" and message["data"]["event_id"] == system.own_event
    assert organizer.request("DELETE", f"/v1/webhooks/{hook['id']}").status_code == 204


def test_killed_while_the_receiver_holds_the_first_delivery_one_webhook_id_per_job(system):
    organizer, receiver = system.client("organizer"), system.receivers["held"]
    hook = register(organizer, receiver.url, ["export.completed"], system.own_event)
    task_url = export(organizer, system.own_event)
    finished(organizer, task_url)
    assert receiver.held.wait(60), "the first delivery never arrived"
    system.stack_.stop("webhooks", kill=True)  # kill -9 with the request in flight
    receiver.release()  # its answer goes into a dead connection
    system.stack_.start("webhooks")
    system.stack_.wait_healthy(timeout=60)
    log = wait_log(organizer, hook["id"], lambda rows: rows and rows[0]["state"] == "delivered", timeout=120)
    task_id = task_url.rsplit("/", 1)[1]
    seen = receiver.requests(lambda s: s.task_id == task_id)
    assert len(seen) >= 2, "the delivery was not attempted again after the restart"
    assert len({s.webhook_id for s in seen}) == 1 and seen[0].webhook_id == log[0]["id"]
    assert len(log) == 1 and log[0]["attempts"] >= 2
    verifier = Webhook(hook["secret"])
    for request in seen:
        verifier.verify(request.body, request.headers)


def test_a_refusing_receiver_gets_the_retries_then_failed(system):
    organizer, receiver = system.client("organizer"), system.receivers["refusing"]
    hook = register(organizer, receiver.url, ["export.completed"], system.own_event)
    task_url = export(organizer, system.own_event)
    finished(organizer, task_url)
    log = wait_log(organizer, hook["id"], lambda rows: rows and rows[0]["state"] == "failed", timeout=90)
    (delivery,) = log
    task_id = task_url.rsplit("/", 1)[1]
    seen = receiver.requests(lambda s: s.task_id == task_id)
    assert delivery["attempts"] >= 3 and len(seen) == delivery["attempts"]
    assert {s.webhook_id for s in seen} == {delivery["id"]}
    assert delivery["last_status"] == 500 and "HTTP 500" in delivery["last_error"]
    assert delivery["next_retry_at"] is None and delivery["delivered_at"] is None


def test_who_may_register_what_and_the_url_guard(system):
    admin, organizer, other = system.client("admin"), system.client("organizer"), system.client("other")
    url = system.receivers["ok"].url

    def post(client: Client, **body: object):
        return client.post("/v1/webhooks", json={"url": url, "events": ["export.completed"], **body})

    r = post(organizer, event_id=system.other_event)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert post(organizer, event_id=None).status_code == 403  # every event: admins only
    assert post(organizer, event_id=10**9).status_code == 404
    for bad in ("http://127.0.0.1:1/hook", "http://localhost:5/x", "file:///etc/passwd", "http://10.0.0.1/x"):
        r = post(admin, event_id=None, url=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_webhook_url", (bad, r.text)
    # seen: each refusal also put an ERROR with a whole traceback on the webhooks service's console (make run)
    assert "cannot receive webhooks" in system.log_text()
    assert "raise InvalidWebhookUrl" not in system.log_text()
    for body in ({"events": ["export.exploded"]}, {"events": []}, {"secret": "plain"}, {"event_id": "1"}):
        r = post(admin, **{"event_id": None, **body})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", (body, r.text)

    mine = post(organizer, event_id=system.own_event, secret="whsec_" + "QUFB" * 10).json()
    assert mine["secret"] == "whsec_" + "QUFB" * 10
    shown = organizer.get(f"/v1/webhooks/{mine['id']}").json()
    assert "secret" not in shown and shown["id"] == mine["id"]
    assert other.get(f"/v1/webhooks/{mine['id']}").status_code == 403
    assert other.request("DELETE", f"/v1/webhooks/{mine['id']}").status_code == 403
    assert mine["id"] not in [h["id"] for h in other.get("/v1/webhooks").json()["data"]]
    assert mine["id"] in [h["id"] for h in admin.get("/v1/webhooks").json()["data"]]
    assert organizer.get("/v1/webhooks/999999").status_code == 404


def test_webhook_lists_are_paginated(system):
    organizer = system.client("organizer")
    ids = [register(organizer, system.receivers["ok"].url, ["export.failed"], system.own_event)["id"]
           for _ in range(3)]
    r = organizer.get("/v1/webhooks", params={"limit": 2})
    page = r.json()
    assert r.status_code == 200 and len(page["data"]) == 2 and page["next_cursor"]
    assert r.links["next"]["url"].startswith(system.url + "/v1/webhooks?")
    rest = organizer.get(r.links["next"]["url"].replace(system.url, "")).json()
    listed = [h["id"] for h in page["data"] + rest["data"]]  # the organizer's earlier webhooks come after these
    assert listed[:3] == ids[::-1] and len(set(listed)) == len(listed)
    for params, code in (({"limit": 0}, "invalid_parameter"), ({"limit": "x"}, "invalid_parameter"),
                         ({"cursor": "nonsense"}, "invalid_cursor")):
        r = organizer.get("/v1/webhooks", params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == code
    delivery_cursor = organizer.get(f"/v1/webhooks/{ids[0]}/deliveries", params={"cursor": page["next_cursor"]})
    assert delivery_cursor.status_code == 400 and delivery_cursor.json()["error"]["code"] == "invalid_cursor"
    for hook_id in ids:
        assert organizer.request("DELETE", f"/v1/webhooks/{hook_id}").status_code == 204
    assert organizer.get(f"/v1/webhooks/{ids[0]}").status_code == 404


def test_events_published_before_the_webhooks_service_ever_ran_are_delivered(tmp_path, monkeypatch):
    """The gateway declares the webhooks service's queues at its start (events are dropped by a broker whose
    subscriber queue does not exist yet)."""
    with closing(WebhookReceiver()) as receiver, stack_for(
            tmp_path, WEBHOOK_ALLOW_HOSTS=f"127.0.0.1:{receiver.port}") as run:
        stack = run.start(services=("api_gateway",))
        for queue in WEBHOOK_QUEUES.values():
            deadline = time.monotonic() + 30
            while not queue_info(run.vhost, queue):
                assert time.monotonic() < deadline, f"{queue} not declared by the gateway"
                time.sleep(0.1)
        secret = new_secret()
        monkeypatch.setenv("SECRET_KEY", run.env.env["SECRET_KEY"])  # the secret is sealed with the stack's key
        with run.env.db() as session:  # registered before, while the service was up: its row is there
            session.add(WebhookEndpoint(url=receiver.url, events=["export.failed"], event_id=None, secret=secret,
                                        active=True, created_by=1))
            session.commit()
        payload = contracts.make_payload(contracts.EXPORT_FAILED, task_id="before-it-ran", event_id=5,
                                         requested_by={"id": 1, "email": "a@example.org"}, code="x", message="y")
        event_dispatcher({"AMQP_URI": run.env.env["AMQP_URI"], "serializer": "json"})(
            contracts.EXPORTER, contracts.EXPORT_FAILED, payload)
        stack.start("webhooks")
        (got,) = receiver.wait_for(lambda seen: len(seen) == 1)
        assert Webhook(secret).verify(got.body, got.headers)["data"] == payload
