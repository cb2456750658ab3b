"""Export end to end: the real five services over real RabbitMQ, driven through the gateway's HTTP API."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass

import pytest
import requests

from shared.models import events as m
from tests.support.e2e import PASSWORD, Client, SystemBase, stack_for
from tools.stack import Stack


@dataclass
class System(SystemBase):
    stack: Stack
    event_id: int
    other_event_id: int


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    users = {"admin": True, "organizer": False, "coorganizer": False, "stranger": False}
    with stack_for(tmp_path_factory.mktemp("export_e2e"), users) as run:
        event_id = run.event("organizer", sessions=60)
        other = run.event("stranger", sessions=3)
        with run.env.db() as session:
            session.add(m.EventRole(user_id=run.users["coorganizer"], event_id=event_id, role=m.ROLE_COORGANIZER))
            session.commit()
        yield System(env=run.env, stack=run.start(), event_id=event_id, other_event_id=other, users=run.users)


def export(client: Client, event_id: int, options: dict | None = None) -> str:
    r = client.post(f"/v1/events/{event_id}/export/json", json=options or {})
    assert r.status_code == 202, r.text
    task_url = r.json()["task_url"]
    assert r.headers["Location"] == task_url
    return task_url


def exported(client: Client, event_id: int) -> bytes:
    """An export run to success; its archive, downloaded and checked against the task's sha256."""
    task = client.wait_task(export(client, event_id))
    assert task["state"] == "SUCCESS", task
    body = requests.get(task["result"]["download_url"], timeout=30).content
    assert hashlib.sha256(body).hexdigest() == task["result"]["sha256"]
    return body


def download(url: str, **headers: str) -> requests.Response:
    return requests.get(url, headers=headers, timeout=30)


def assert_error(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    return error


# --- authentication ------------------------------------------------------------------------------------------------

def test_login_accepts_bearer_and_jwt_schemes(system):
    r = requests.post(system.url + "/v1/auth/login", json={"email": "organizer@example.org", "password": PASSWORD})
    token = r.json()["access_token"]
    for scheme in ("Bearer", "JWT"):
        listed = requests.get(system.url + "/v1/events", headers={"Authorization": f"{scheme} {token}"})
        assert listed.status_code == 200, listed.text


def test_login_refuses_wrong_password_and_bad_bodies(system):
    r = requests.post(system.url + "/v1/auth/login", json={"email": "organizer@example.org", "password": "nope"})
    assert_error(r, 401, "invalid_credentials")
    assert_error(requests.post(system.url + "/v1/auth/login", data="{not json"), 400, "invalid_json")
    assert_error(requests.post(system.url + "/v1/auth/login", json={"email": 1}), 400, "invalid_request")


def test_protected_routes_need_a_valid_token(system):
    assert_error(requests.get(system.url + "/v1/events"), 401, "unauthorized")
    r = requests.get(system.url + "/v1/events", headers={"Authorization": "Bearer not.a.token"})
    assert_error(r, 401, "invalid_token")


# --- events --------------------------------------------------------------------------------------------------------

def test_events_are_listed_for_their_organizers_and_admins(system):
    mine = [e["id"] for e in system.client("organizer").get("/v1/events").json()["data"]]
    assert mine == [system.event_id]
    everything = [e["id"] for e in system.client("admin").get("/v1/events").json()["data"]]
    assert {system.event_id, system.other_event_id} <= set(everything)


def test_event_detail_has_record_counts(system):
    detail = system.client("coorganizer").get(f"/v1/events/{system.event_id}").json()
    assert detail["counts"]["sessions"] == 60
    assert detail["counts"]["speakers"] == 30
    assert_error(system.client("stranger").get(f"/v1/events/{system.event_id}"), 403, "forbidden")


# --- export authorization and validation ---------------------------------------------------------------------------

def test_export_authorization(system):
    path = f"/v1/events/{system.event_id}/export/json"
    assert_error(requests.post(system.url + path, json={}), 401, "unauthorized")
    assert_error(system.client("stranger").post(path, json={}), 403, "forbidden")
    assert_error(system.client("organizer").post("/v1/events/999999/export/json", json={}), 404, "event_not_found")
    for who in ("organizer", "coorganizer", "admin"):
        assert system.client(who).post(path, json={}).status_code == 202


@pytest.mark.parametrize("body", [{"image": "yes"}, {"image": 1}, {"video": None}, {"pdf": True}, [True], "x"])
def test_export_options_must_be_booleans(system, body):
    r = system.client("organizer").post(f"/v1/events/{system.event_id}/export/json", json=body)
    assert_error(r, 400, "invalid_request")


def test_unknown_export_option_names_every_allowed_one(system):
    r = system.client("organizer").post(f"/v1/events/{system.event_id}/export/json", json={"pdf": True})
    assert_error(r, 400, "invalid_request")
    message = r.json()["error"]["message"]
    assert "pdf" in message
    assert message.endswith("allowed: image, video, document, audio, storage."), message


def test_export_rejects_malformed_json(system):
    r = system.client("organizer").post(f"/v1/events/{system.event_id}/export/json", data="{",
                                         headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")


# --- the export itself ---------------------------------------------------------------------------------------------

def test_export_produces_a_downloadable_archive(system):
    organizer = system.client("organizer")
    task_url = export(organizer, system.event_id)
    task = organizer.wait_task(task_url)
    assert task["state"] == "SUCCESS", task
    result = task["result"]
    assert set(result) >= {"download_url", "size", "sha256", "expires_at"}

    r = download(result["download_url"])  # no credentials: the signed URL is the authorization
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == f"attachment; filename=event{system.event_id}.zip"
    assert len(r.content) == result["size"]
    assert hashlib.sha256(r.content).hexdigest() == result["sha256"]

    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names == ["event", "microlocations", "sessions", "speakers", "sponsors", "tracks", "session_types",
                     "forms", "meta"]
    sessions = json.loads(archive.read("sessions"))
    assert len(sessions) == 60
    assert list(sessions[0])[:6] == ["id", "title", "subtitle", "short_abstract", "long_abstract", "start_time"]
    meta = json.loads(archive.read("meta"))
    assert meta["root_url"] and meta["format_version"] and meta["generator"] and meta["exported_at"]
    for name in names[:-1]:
        assert meta["files"][name]["sha256"] == hashlib.sha256(archive.read(name)).hexdigest()
    assert meta["files"]["sessions"]["count"] == 60


def test_download_supports_ranges(system):
    organizer = system.client("organizer")
    result = organizer.wait_task(export(organizer, system.event_id))["result"]
    whole = download(result["download_url"]).content
    part = download(result["download_url"], Range="bytes=10-109")
    assert part.status_code == 206
    assert part.content == whole[10:110]
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(whole)}"


def test_task_is_visible_to_its_requester_and_admins_only(system):
    organizer = system.client("organizer")
    task_url = export(organizer, system.event_id)
    assert system.client("admin").get(task_url).status_code == 200
    assert_error(system.client("coorganizer").get(task_url), 403, "forbidden")
    assert_error(requests.get(system.url + task_url), 401, "unauthorized")
    assert_error(organizer.get("/v1/tasks/00000000-0000-0000-0000-000000000000"), 404, "task_not_found")
    organizer.wait_task(task_url)


def test_export_history_and_fresh_download_link(system):
    organizer = system.client("organizer")
    task_url = export(organizer, system.event_id)
    task = organizer.wait_task(task_url)
    task_id = task_url.rsplit("/", 1)[1]
    history = organizer.get(f"/v1/events/{system.event_id}/exports").json()["data"]
    entry = next(e for e in history if e["task_id"] == task_id)
    assert entry["state"] == "SUCCESS" and entry["sha256"] == task["result"]["sha256"]

    r = organizer.get(entry["download"], allow_redirects=False)
    assert r.status_code == 302
    fresh = download(r.headers["Location"])
    assert hashlib.sha256(fresh.content).hexdigest() == task["result"]["sha256"]
    assert_error(system.client("stranger").get(entry["download"], allow_redirects=False), 403, "forbidden")
    assert_error(organizer.get(f"/v1/events/{system.event_id}/exports/nope", allow_redirects=False), 404,
                 "export_not_found")


def test_tampered_download_links_are_refused(system):
    organizer = system.client("organizer")
    url = organizer.wait_task(export(organizer, system.event_id))["result"]["download_url"]
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    sig = params["signature"]
    tampered = {
        "signature": query.replace(sig, sig[:-1] + ("0" if sig[-1] != "0" else "1")),
        "expiry": query.replace(f"expires={params['expires']}", f"expires={int(params['expires']) + 3600}"),
        "filename": query.replace(f"filename={params['filename']}", "filename=other.zip"),
    }
    for _what, q in tampered.items():
        r = download(f"{base}?{q}")
        assert_error(r, 403, "invalid_signature")
    other_key = base.replace(f"event{system.event_id}.zip", "x.zip")
    assert_error(download(f"{other_key}?{query}"), 403, "invalid_signature")


def test_health_reports_broker_database_and_services(system):
    report = requests.get(system.url + "/health", timeout=30).json()
    assert report["broker"]["ok"] and report["database"]["ok"]
    assert report["database"]["migrations"]["at_head"] is True
    assert set(report["services"]) == {"storage", "exporter", "importer", "mailer", "webhooks"}
    assert all(service["ok"] for service in report["services"].values())
    # This stack has no mail server (tests/e2e.py points SMTP_PORT at nothing): mail delivery is its only problem.
    assert report["status"] == "degraded"
    assert [r.split(":")[0] for r in report["reasons"]] == ["mailer"]


def test_documented_subscriber_example_receives_export_completed(system):
    """examples/export_subscriber.py, as docs/events.md tells people to run it, hears about a finished export."""
    import os
    import subprocess
    import sys
    import time

    from tests.support.rabbit import queue_info
    from tools.stack import NAMEKO_CONFIG, REPO

    log = system.env.var_dir / "log" / "export_subscriber.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nameko", "run", "--config", str(NAMEKO_CONFIG),
                                 "examples.export_subscriber"], cwd=REPO, env={**os.environ, **system.env.env},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        queue = "evt-exporter-export_completed--export_subscriber.on_export_completed"
        deadline = time.monotonic() + 30
        while queue_info(system.env.vhost, queue) is None:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        organizer = system.client("organizer")
        task_url = export(organizer, system.event_id)
        sha256 = organizer.wait_task(task_url)["result"]["sha256"]
        while sha256 not in log.read_text():
            assert time.monotonic() < deadline + 30, log.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)
