"""The API's roles, identity, task list and pages on the real five services, driven only over HTTP: a co-organizer
added through the API exports the event and, removed, is refused; the last organizer stays (also when two
organizers remove each other at once); ``/v1/me``; ``/v1/tasks`` filters; every list pages by ``Link``."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass

import pytest

from tests.support.e2e import Client, SystemBase, stack_for
from tests.support.hostile_archives import base_files
from tests.support.import_helpers import submit_ok
from tools.stack import Stack

USERS = {"admin": True, "orga": False, "orgb": False, "coorg": False, "stranger": False, "pager": False}


@dataclass
class System(SystemBase):
    stack: Stack
    event_id: int
    duel_event_id: int
    pager_events: list[int]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with stack_for(tmp_path_factory.mktemp("roles_pages_e2e"), USERS) as run:
        event_id = run.event("orga", sessions=3)
        duel = run.event("orga", sessions=1)
        pager = [run.event("pager", sessions=1) for _ in range(5)]
        yield System(env=run.env, users=run.users, stack=run.start(), event_id=event_id, duel_event_id=duel,
                     pager_events=pager)


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def all_pages(client: Client, path: str) -> list[list[dict]]:
    """Every page of a list, following the ``Link`` header (an absolute URL) to the end."""
    pages, url = [], client.base_url + path
    while True:
        r = client.http.get(url, timeout=30)
        assert r.status_code == 200, r.text
        pages.append(r.json()["data"])
        if r.json()["next_cursor"] is None:
            assert "next" not in r.links
            return pages
        url = r.links["next"]["url"]
        assert url.startswith(client.base_url + path.split("?")[0] + "?") and "cursor=" in url


def test_me(system):
    me = system.client("orga").get("/v1/me")
    assert me.status_code == 200
    assert me.json() == {"id": system.users["orga"], "email": "orga@example.org", "is_admin": False}
    assert system.client("admin").get("/v1/me").json()["is_admin"] is True
    assert_error(Client(system.url).get("/v1/me"), 401, "unauthorized")
    assert_error(Client(system.url, "not.a.token").get("/v1/me"), 401, "invalid_token")


def test_a_coorganizer_added_through_the_api_exports_and_removed_is_refused(system):
    orga, coorg = system.client("orga"), system.client("coorg")
    roles = f"/v1/events/{system.event_id}/roles"
    assert_error(coorg.post(f"/v1/events/{system.event_id}/export/json", json={}), 403, "forbidden")
    r = orga.post(roles, json={"email": "coorg@example.org", "role": "coorganizer"})
    assert r.status_code == 201, r.text
    assert r.json() == {"user_id": system.users["coorg"], "email": "coorg@example.org", "role": "coorganizer"}
    assert orga.post(roles, json={"email": "coorg@example.org", "role": "coorganizer"}).status_code == 200

    r = coorg.post(f"/v1/events/{system.event_id}/export/json", json={})
    assert r.status_code == 202, r.text
    assert coorg.wait_task(r.json()["task_url"], timeout=90)["state"] == "SUCCESS"
    listed = coorg.get(roles).json()["data"]  # co-organizers read the roles, may not change them
    assert {(x["email"], x["role"]) for x in listed} == {("orga@example.org", "organizer"),
                                                         ("coorg@example.org", "coorganizer")}
    assert_error(coorg.post(roles, json={"email": "stranger@example.org", "role": "coorganizer"}), 403, "forbidden")
    assert_error(coorg.request("DELETE", f"{roles}/{system.users['orga']}"), 403, "forbidden")
    assert_error(system.client("stranger").get(roles), 403, "forbidden")
    assert_error(orga.post(roles, json={"email": "nobody@example.org", "role": "coorganizer"}), 404,
                 "user_not_found")
    assert_error(orga.post(roles, json={"email": "coorg@example.org", "role": "owner"}), 400, "invalid_request")

    assert orga.request("DELETE", f"{roles}/{system.users['coorg']}").status_code == 204
    assert_error(orga.request("DELETE", f"{roles}/{system.users['coorg']}"), 404, "role_not_found")
    assert_error(coorg.post(f"/v1/events/{system.event_id}/export/json", json={}), 403, "forbidden")
    assert_error(coorg.get(f"/v1/events/{system.event_id}"), 403, "forbidden")
    assert_error(coorg.get(roles), 403, "forbidden")


def test_the_last_organizer_cannot_be_removed_even_by_two_at_once(system):
    orga, orgb = system.client("orga"), system.client("orgb")
    roles = f"/v1/events/{system.duel_event_id}/roles"
    assert_error(orga.request("DELETE", f"{roles}/{system.users['orga']}"), 409, "last_organizer")
    assert_error(system.client("admin").request("DELETE", f"{roles}/{system.users['orga']}?role=organizer"), 409,
                 "last_organizer")
    duel(system, roles, {"orga": orga, "orgb": orgb})


def duel(system: SystemBase, roles: str, clients: dict[str, Client], rounds: int = 5) -> None:
    """Organizers orga and orgb remove each other at the same moment, ``rounds`` times: one organizer stays."""
    survivor, other = "orga", "orgb"
    for _ in range(rounds):
        r = clients[survivor].post(roles, json={"email": f"{other}@example.org", "role": "organizer"})
        assert r.status_code == 201, r.text
        answers: dict[str, int] = {}
        go = threading.Barrier(2)

        def remove(me: str, them: str, answers: dict = answers, go: threading.Barrier = go) -> None:
            go.wait(10)
            answers[them] = clients[me].request("DELETE", f"{roles}/{system.users[them]}").status_code

        threads = [threading.Thread(target=remove, args=("orga", "orgb")),
                   threading.Thread(target=remove, args=("orgb", "orga"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # one wins; the other is refused: 409 if it got past the rules before the win, else 403 (no organizer now)
        assert sorted(answers.values()) in ([204, 403], [204, 409]), answers
        left = system.client("admin").get(roles).json()["data"]
        assert [x["role"] for x in left] == ["organizer"], left
        survivor = left[0]["email"].split("@")[0]
        other = "orgb" if survivor == "orga" else "orga"


def test_two_organizers_removing_each_other_on_postgresql(tmp_path, postgres_url):
    with stack_for(tmp_path, {"admin": True, "orga": False, "orgb": False}, database_url=postgres_url) as run:
        event_id = run.event("orga", sessions=1)
        run.start()
        duel(run, f"/v1/events/{event_id}/roles", {"orga": run.client("orga"), "orgb": run.client("orgb")})


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in base_files().items():
            zf.writestr(name, json.dumps(value))
    return buffer.getvalue()


def test_the_callers_tasks_filtered(system):
    stranger, other = system.client("stranger"), system.client("orga")
    imported = stranger.wait_task(submit_ok(stranger, _archive()), timeout=90)
    assert imported["state"] == "SUCCESS", imported
    new_event = imported["result"]["id"]
    r = stranger.post(f"/v1/events/{new_event}/export/json", json={})
    assert r.status_code == 202, r.text
    exported = stranger.wait_task(r.json()["task_url"], timeout=90)
    export_url = r.json()["task_url"]
    assert other.post(f"/v1/events/{system.event_id}/export/json", json={}).status_code == 202  # not stranger's

    def ids(query: str) -> list[str]:
        return [t["id"] for page in all_pages(stranger, f"/v1/tasks?limit=1&{query}") for t in page]

    assert ids("") == [exported["id"], imported["id"]]  # newest first, the caller's only
    assert ids("kind=import") == [imported["id"]]
    assert ids("kind=export") == [exported["id"]]
    assert ids(f"event_id={new_event}") == [exported["id"], imported["id"]]  # the import made that event
    assert ids(f"event_id={system.event_id}") == []  # orga's export of it is orga's
    assert ids("state=SUCCESS") == [exported["id"], imported["id"]]
    assert ids("state=FAILURE") == [] and ids("state=WAITING") == []
    item = stranger.get("/v1/tasks?kind=export").json()["data"][0]
    assert item == {**stranger.get(export_url).json(), "task_url": export_url}
    assert_error(stranger.get("/v1/tasks?kind=upload"), 400, "invalid_parameter")
    assert_error(stranger.get("/v1/tasks?state=DONE"), 400, "invalid_parameter")
    assert_error(stranger.get("/v1/tasks?event_id=abc"), 400, "invalid_parameter")
    assert_error(Client(system.url).get("/v1/tasks"), 401, "unauthorized")


def test_events_page_two_at_a_time(system):
    pager = system.client("pager")
    pages = all_pages(pager, "/v1/events?limit=2")
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [e["id"] for p in pages for e in p] == system.pager_events[::-1]  # each once, newest first
    first = pager.get("/v1/events?limit=2")
    cursor = first.json()["next_cursor"]
    assert_error(pager.get("/v1/events?limit=0"), 400, "invalid_parameter")
    assert_error(pager.get("/v1/events?limit=201"), 400, "invalid_parameter")
    assert_error(pager.get("/v1/events?cursor=nonsense"), 400, "invalid_cursor")
    assert_error(pager.get(f"/v1/import-jobs?cursor={cursor}"), 400, "invalid_cursor")  # another list's
    assert_error(system.client("admin").get(f"/v1/events?cursor={cursor}"), 400, "invalid_cursor")  # another's


def test_the_other_lists_page_too(system):
    admin = system.client("admin")
    for path in ("/v1/storage-backends", "/v1/admin/storage-backends", f"/v1/events/{system.event_id}/exports",
                 "/v1/import-jobs", f"/v1/events/{system.event_id}/roles"):
        r = admin.get(path + "?limit=1")
        assert r.status_code == 200 and "next_cursor" in r.json(), (path, r.text)
        assert_error(admin.get(path + "?limit=x"), 400, "invalid_parameter")
        assert_error(admin.get(path + "?cursor=x.y"), 400, "invalid_cursor")
    # the mail log is the mailer's, paged there: one delivery per finished job of the tests above
    deadline = time.monotonic() + 60
    while len(admin.get("/v1/admin/mails?limit=200").json()["data"]) < 3:
        assert time.monotonic() < deadline, "the mailer recorded no deliveries"
        time.sleep(0.2)
    everything = [d["id"] for d in admin.get("/v1/admin/mails?limit=200").json()["data"]]
    paged = [d["id"] for page in all_pages(admin, "/v1/admin/mails?limit=1") for d in page]
    assert set(everything) <= set(paged) and paged == sorted(set(paged), reverse=True)  # each once, newest first
    assert_error(admin.get("/v1/admin/mails?limit=500"), 400, "invalid_parameter")
