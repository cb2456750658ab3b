"""Schedule formats end to end: ``POST /v1/events/{id}/export/<format>`` for every format over the real stack
(gateway, exporter, storage, mailer on real RabbitMQ), the downloaded file validated; and the public feeds with
conditional requests and CORS."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
import requests

from shared.archive import formats
from shared.contracts import EXPORT_COMPLETED, EXPORTER
from shared.models import events as m
from tests.e2e.test_export_e2e import assert_error
from tests.integration.test_schedule_exports import CHECKS, SCHEDULE_FORMATS
from tests.support import schedule_checks as checks
from tests.support.e2e import SystemBase, add_synthetic_event, stack_for
from tests.support.event_tap import EventTap

ORIGIN = "https://app.example.org"


@dataclass
class System(SystemBase):
    event_id: int
    draft_id: int
    tap: EventTap


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    users = {"organizer": False, "stranger": False}
    with stack_for(tmp_path_factory.mktemp("schedule_e2e"), users, CORS_ORIGINS=ORIGIN) as run:
        event_id = run.event("organizer", 60)
        draft_id = run.event("organizer", 5, seed=3)
        with run.env.db() as session:
            session.get(m.Event, draft_id).state = "Draft"
            session.commit()
        tap = EventTap(run.env.env["AMQP_URI"], EXPORTER)  # before the stack: no event is missed
        run.start()
        yield System(run.env, run.users, event_id, draft_id, tap)


def test_formats_are_listed(system):
    listed = requests.get(system.url + "/v1/formats", timeout=10).json()["data"]
    assert [f["identifier"] for f in listed] == ["json", *SCHEDULE_FORMATS]
    assert {f["identifier"]: f["extension"] for f in listed}["ical"] == ".ics"


@pytest.mark.parametrize("identifier", SCHEDULE_FORMATS)
def test_export_in_every_format_downloads_a_valid_file(system, identifier):
    fmt = formats.get_format(identifier)
    organizer = system.client("organizer")
    r = organizer.post(f"/v1/events/{system.event_id}/export/{identifier}", json={})
    assert r.status_code == 202, r.text
    task_url = r.json()["task_url"]
    task = organizer.wait_task(task_url)
    assert task["state"] == "SUCCESS", task
    result = task["result"]
    assert result["key"].endswith(f"/event{system.event_id}{fmt.extension}")
    assert result["retention"]["backend"]

    download = requests.get(result["download_url"], timeout=30)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == f"attachment; filename=event{system.event_id}{fmt.extension}"
    assert hashlib.sha256(download.content).hexdigest() == result["sha256"] and len(download.content) == result["size"]
    CHECKS[identifier](download.content)

    task_id = task_url.rsplit("/", 1)[1]
    completed = system.tap.wait_for(task_id, EXPORT_COMPLETED)[0]
    assert completed["format"] == identifier and completed["key"] == result["key"]
    history = organizer.get(f"/v1/events/{system.event_id}/exports?limit=200").json()["data"]
    entry = next(e for e in history if e["task_id"] == task_id)
    assert entry["format"] == identifier
    again = organizer.get(entry["download"], allow_redirects=False)
    assert again.status_code == 302
    assert f"event{system.event_id}{fmt.extension}" in again.headers["Location"]


def test_the_downloaded_xml_and_json_show_apps_the_same_schedule(system):
    organizer = system.client("organizer")
    files = {}
    for identifier in ("frab-xml", "schedule-json"):
        r = organizer.post(f"/v1/events/{system.event_id}/export/{identifier}", json={})
        task = organizer.wait_task(r.json()["task_url"])
        files[identifier] = requests.get(task["result"]["download_url"], timeout=30).content
    from_xml = checks.giggity_sessions(files["frab-xml"])
    assert len(from_xml) == 60 and from_xml == checks.fahrplan_sessions(files["schedule-json"])


@pytest.mark.parametrize(("extension", "identifier"), [("xml", "frab-xml"), ("json", "schedule-json"),
                                                       ("ics", "ical")])
def test_public_feed_with_conditional_requests_and_cors(system, extension, identifier):
    url = f"{system.url}/v1/events/{system.event_id}/schedule.{extension}"
    r = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)  # no token: public
    assert r.status_code == 200, r.text
    CHECKS[identifier](r.content)
    assert r.headers["Content-Type"].startswith(formats.get_format(identifier).content_type.split(";")[0])
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    etag, modified = r.headers["ETag"], r.headers["Last-Modified"]

    same = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == etag
    since = requests.get(url, headers={"If-Modified-Since": modified}, timeout=30)
    assert since.status_code == 304
    stale = requests.get(url, headers={"If-None-Match": '"something-else"'}, timeout=30)
    assert stale.status_code == 200 and stale.content == r.content
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == etag
    other_origin = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in other_origin.headers


def test_feed_preflight_allows_conditional_headers(system):
    r = requests.options(f"{system.url}/v1/events/{system.event_id}/schedule.json", timeout=10,
                         headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                  "Access-Control-Request-Headers": "if-none-match"})
    assert r.status_code in (200, 204), r.text
    assert "if-none-match" in r.headers["Access-Control-Allow-Headers"].lower()


def test_unpublished_and_unknown_feeds_are_404(system):
    assert_error(requests.get(f"{system.url}/v1/events/{system.draft_id}/schedule.xml", timeout=10), 404,
                 "schedule_not_published")
    assert_error(requests.get(f"{system.url}/v1/events/999999/schedule.json", timeout=10), 404,
                 "schedule_not_published")
    assert_error(requests.get(f"{system.url}/v1/events/{system.event_id}/schedule.pdf", timeout=10), 404,
                 "not_found")


def test_organizer_publishes_and_withdraws_a_schedule(system):
    event_id = add_synthetic_event(system.env, system.users["organizer"], 5, seed=11)
    with system.env.db() as session:
        session.get(m.Event, event_id).state = "Draft"
        session.commit()
    feed = f"{system.url}/v1/events/{event_id}/schedule.xml"
    path = f"/v1/events/{event_id}/publication"
    assert_error(requests.get(feed, timeout=10), 404, "schedule_not_published")
    assert_error(requests.put(system.url + path, json={"published": True}, timeout=10), 401, "unauthorized")
    assert_error(system.client("stranger").request("PUT", path, json={"published": True}), 403, "forbidden")
    organizer = system.client("organizer")
    assert_error(organizer.request("PUT", path, json={"published": "yes"}), 400, "invalid_request")
    assert_error(requests.get(feed, timeout=10), 404, "schedule_not_published")  # refusals changed nothing

    r = organizer.request("PUT", path, json={"published": True})
    assert r.status_code == 200, r.text
    assert r.json()["published"] is True and r.json()["feeds"]["xml"] == feed
    published = requests.get(feed, timeout=30)
    assert published.status_code == 200, published.text
    CHECKS["frab-xml"](published.content)

    r = organizer.request("PUT", path, json={"published": False})
    assert r.status_code == 200 and r.json() == {"id": event_id, "published": False, "feeds": {}}
    assert_error(requests.get(feed, timeout=10), 404, "schedule_not_published")
