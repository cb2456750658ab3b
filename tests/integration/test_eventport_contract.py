"""The eventport CLI against a stand-in of the agreed list contract (``next_cursor`` pages, ``GET /v1/me``), served
over real HTTP on 127.0.0.1: what the CLI sends and how it follows pages, while the gateway's own routes are being
built elsewhere. The real gateway: tests/e2e/test_eventport_cli_e2e.py."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from eventport.cli import main

TASKS = [{"id": f"t{i}", "kind": "export", "event_id": 7, "state": "SUCCESS", "status": "progress",
          "created_at": f"2026-01-0{9 - i}T00:00:00Z", "task_url": f"/v1/tasks/t{i}"} for i in range(5)]


class ContractServer(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, list[str]], str | None]] = []
    loop = False  # answer the same cursor for ever (a broken server)
    garbage: object = None  # when set: the JSON answered (200) to every request, as a server that is not ours

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.garbage is not None:
            return self._json(200, self.garbage)
        return self._json(404, {"error": {"code": "not_found", "message": "The requested URL was not found."}})

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.seen.append((url.path, query, self.headers.get("Authorization")))
        if self.garbage is not None:
            return self._json(200, self.garbage)
        if self.headers.get("Authorization") != "Bearer tok":
            return self._json(401, {"error": {"code": "invalid_token", "message": "Log in first."}})
        if url.path == "/v1/me":
            return self._json(200, {"id": 3, "email": "orga@example.org", "is_admin": False})
        if url.path == "/v1/tasks":
            limit = int(query.get("limit", ["50"])[0])
            start = int(query.get("cursor", ["0"])[0])
            page = TASKS[start:start + limit]
            more = start + limit < len(TASKS)
            cursor = "0" if self.loop else (str(start + limit) if more else None)
            return self._json(200, {"data": page, "next_cursor": cursor})
        return self._json(404, {"error": {"code": "not_found", "message": "The requested URL was not found."}})


@pytest.fixture
def server(monkeypatch) -> Iterator[str]:
    ContractServer.seen = []
    ContractServer.loop = False
    ContractServer.garbage = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ContractServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("EVENTPORT_TOKEN", "tok")
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tasks_follows_every_page_with_the_filters(server, capsys):
    assert main(["--url", server, "--json", "tasks", "--kind", "export", "--state", "success", "--event", "7",
                 "--page-size", "2"]) == 0
    listed = json.loads(capsys.readouterr().out)["data"]
    assert [t["id"] for t in listed] == [t["id"] for t in TASKS]
    assert [q.get("cursor") for _, q, _ in ContractServer.seen] == [None, ["2"], ["4"]]
    for path, query, auth in ContractServer.seen:
        assert (path, auth) == ("/v1/tasks", "Bearer tok")
        assert {k: v for k, v in query.items() if k != "cursor"} == {"kind": ["export"], "state": ["SUCCESS"],
                                                                      "event_id": ["7"], "limit": ["2"]}


def test_a_cursor_that_comes_back_ends_the_listing(server, capsys):
    ContractServer.loop = True
    assert main(["--url", server, "--json", "tasks", "--page-size", "2"]) == 0
    assert len(ContractServer.seen) == 2  # the first page, then the cursor "0" once: never a loop
    assert len(json.loads(capsys.readouterr().out)["data"]) == 4


def test_tasks_in_a_table(server, capsys):
    assert main(["--url", server, "tasks"]) == 0
    out = capsys.readouterr().out
    assert "STATE" in out and all(t["id"] in out for t in TASKS)


def test_whoami(server, capsys):
    assert main(["--url", server, "whoami"]) == 0
    assert capsys.readouterr().out.strip() == f"orga@example.org (user 3) at {server}"


def test_a_server_without_the_route_says_so(server, capsys):
    assert main(["--url", server, "events"]) == 1  # the stand-in has no /v1/events: a plain 404 of the server
    assert "The requested URL was not found" in capsys.readouterr().err


def test_a_refused_token_is_exit_3(server, capsys, monkeypatch):
    monkeypatch.setenv("EVENTPORT_TOKEN", "stale")
    assert main(["--url", server, "whoami"]) == 3
    assert "Log in first. Log in again: eventport login (invalid_token, HTTP 401)" in capsys.readouterr().err



@pytest.mark.parametrize("body", [[1, 2, 3], "x", {"data": "x", "next_cursor": 5}, {"data": [1]}])
@pytest.mark.parametrize("argv", [["events"], ["formats"], ["whoami"], ["task", "t1"], ["tasks"], ["exports", "1"],
                                  ["backends"], ["download", "t1"]])
def test_json_that_is_not_the_apis_is_a_clear_error(server, capsys, body, argv):
    # seen: a server answering [1, 2, 3] (or {"data": "x"}) made every command end in "internal error:
    # AttributeError: 'list' object has no attribute 'get'"
    ContractServer.garbage = body
    code = main(["--url", server, *argv])
    err = capsys.readouterr().err
    assert "internal error" not in err
    if isinstance(body, list | str) or argv[0] in ("events", "formats", "tasks", "exports", "backends"):
        assert code == 1 and "is --url the platform's API? (invalid_response" in err, err


def test_a_login_answer_without_a_token_is_a_clear_error(server, capsys, monkeypatch, tmp_path):
    ContractServer.garbage = {"access_token": 7}
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["--url", server, "login", "a@example.org", "--password-stdin"]) == 1
    assert "invalid_response" in capsys.readouterr().err
    assert not (tmp_path / "eventport" / "credentials.json").exists()
