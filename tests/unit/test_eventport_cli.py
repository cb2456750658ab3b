"""The eventport CLI's pure parts: progress formatting, the login file, the multipart body, resume decisions and
argument parsing. The commands against a real server: tests/e2e/test_eventport_cli_e2e.py."""

from __future__ import annotations

import ast
import json
import stat
import sys
from pathlib import Path

import pytest
from werkzeug.sansio.multipart import Data, Epilogue, File, MultipartDecoder, NeedData

from eventport.cli import build_parser, main
from eventport.commands import download_name, failure, import_format, task_id_of
from eventport.config import TOKEN_VARIABLE, Credentials, config_dir
from eventport.errors import FAILED, CliError
from eventport.progress import count_text, human_bytes, parse_rate, step_text, task_step
from eventport.transfer import MultipartFile, part_path, resume_plan

REPO = Path(__file__).resolve().parents[2]


def test_the_cli_speaks_only_http():
    """It imports the standard library, requests and rich: never the services, shared code or a database driver,
    so it installs and runs anywhere the API is reachable."""
    wrong = []
    for path in sorted((REPO / "eventport").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("eventport", "requests", "rich"):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert not wrong


# --- progress formatting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "text"), [(None, "?"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                            (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3.0 TiB"), (2**60, "1048576.0 TiB")])
def test_human_bytes(size, text):
    assert human_bytes(size) == text


@pytest.mark.parametrize(("text", "rate"), [("500", 500), ("200k", 204800), ("1.5M", 1572864), ("1g", 2**30),
                                            ("64KiB/s", 65536), (" 2 kb ", 2048)])
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1k", "0", "1t", "0.5"])
def test_parse_rate_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_task_step_before_any_progress():
    assert task_step({"kind": "export", "state": "WAITING", "status": "queued"}) == ("export queued", None, None)
    assert task_step({"kind": "import", "state": "WAITING", "status": "started"}) == ("import started", None, None)


def test_task_step_with_progress():
    export = {"kind": "export", "state": "WAITING", "status": "progress",
              "progress": {"stage": "sessions", "done": 120, "total": 500}}
    assert task_step(export) == ("export · sessions", 120, 500)
    assert step_text(export) == "export · sessions 120/500"
    imported = {"kind": "import", "state": "WAITING", "status": "progress",
                "progress": {"stage": "speakers", "done": 3, "total": None, "phase": "validate"}}
    assert task_step(imported) == ("import · validate · speakers", 3, None)
    assert step_text(imported) == "import · validate · speakers 3"


def test_count_text():
    assert count_text({"kind": "export", "state": "WAITING", "status": "queued"}) == ""
    downloading = {"kind": "import", "state": "WAITING", "status": "progress",
                   "progress": {"stage": "FOSSASIA16.zip", "done": 1572864, "total": 4620884, "phase": "download"}}
    assert count_text(downloading) == "1.5 MiB / 4.4 MiB"
    assert step_text(downloading) == "import · download · FOSSASIA16.zip 1.5 MiB / 4.4 MiB"
    downloading["progress"]["total"] = None
    assert count_text(downloading) == "1.5 MiB"
    assert count_text({"kind": "export", "state": "WAITING", "status": "progress",
                       "progress": {"stage": "sessions", "done": 7, "total": None}}) == "7"


def test_task_step_tolerates_odd_numbers():
    odd = {"kind": "export", "state": "WAITING", "status": "progress",
           "progress": {"stage": "media", "done": 700, "total": 500}}
    assert task_step(odd) == ("export · media", 500, 500)  # never past the end of the bar
    odd["progress"] = {"stage": "media", "done": True, "total": 0}
    assert task_step(odd) == ("export · media", None, None)
    odd["progress"] = {"stage": "media", "done": -3, "total": "10"}
    assert task_step(odd) == ("export · media", None, None)


def test_task_step_when_finished():
    assert task_step({"kind": "export", "state": "SUCCESS", "status": "progress",
                      "progress": {"stage": "meta", "done": 1, "total": 9}}) == ("export success", None, None)
    assert step_text({"kind": "import", "state": "FAILURE", "status": "started"}) == "import failure"


# --- the login file ---------------------------------------------------------------------------------------------

def test_config_dir_follows_xdg():
    assert str(config_dir({"XDG_CONFIG_HOME": "/x/conf", "HOME": "/home/u"})) == "/x/conf/eventport"
    assert str(config_dir({"HOME": "/home/u"})) == "/home/u/.config/eventport"
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    assert str(config_dir({"XDG_CONFIG_HOME": "conf", "HOME": "/home/u"})) == "/home/u/.config/eventport"


def test_credentials_are_private_and_kept_per_server(tmp_path):
    creds = Credentials(tmp_path / "cfg" / "eventport")
    assert creds.token("http://a:8000", env={}) is None
    creds.save("http://a:8000/", "token-a", "a@example.org")
    creds.save("https://b.example", "token-b", "b@example.org")
    assert stat.S_IMODE(creds.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.directory.stat().st_mode) == 0o700
    assert creds.token("http://a:8000", env={}) == "token-a"  # a trailing slash names the same server
    assert creds.get("https://b.example") == {"token": "token-b", "email": "b@example.org"}
    assert creds.token("http://a:8000", env={TOKEN_VARIABLE: "from-env"}) == "from-env"
    assert list(tmp_path.joinpath("cfg", "eventport").iterdir()) == [creds.path]  # no temporary file left

    assert creds.remove("http://a:8000") is True
    assert creds.remove("http://a:8000") is False
    assert creds.token("http://a:8000", env={}) is None and creds.token("https://b.example", env={}) == "token-b"
    assert creds.remove("https://b.example") is True
    assert not creds.path.exists()


def test_a_damaged_credentials_file_is_no_login(tmp_path):
    creds = Credentials(tmp_path)
    for text in ("not json", "[]", '{"servers": []}', '{"servers": {"http://a": {"token": 5}}}'):
        creds.path.write_text(text)
        assert creds.get("http://a") is None
    creds.save("http://a", "t", "e")
    assert json.loads(creds.path.read_text()) == {"servers": {"http://a": {"token": "t", "email": "e"}}}


# --- the upload body ---------------------------------------------------------------------------------------------

def _decode(body: bytes, boundary: str) -> tuple[str, str, bytes]:
    decoder = MultipartDecoder(boundary.encode())
    decoder.receive_data(body)
    decoder.receive_data(None)
    name = filename = ""
    data = b""
    while True:
        event = decoder.next_event()
        if isinstance(event, File):
            name, filename = event.name, event.filename
        elif isinstance(event, Data):
            data += event.data
        elif isinstance(event, Epilogue | NeedData):
            return name, filename, data


def test_multipart_body_is_streamed_with_an_exact_length(tmp_path):
    path = tmp_path / "FOSSASIA 16.zip"
    content = bytes(range(256)) * 5000  # 1.28 MB: several chunks
    path.write_bytes(content)
    sent: list[int] = []
    body = MultipartFile(path, on_chunk=sent.append, chunk_size=100_000)
    assert body.content_type == f"multipart/form-data; boundary={body.boundary}"
    pieces = list(body)
    assert len(pieces) == 2 + 13 and max(len(p) for p in pieces) <= 100_000  # head, 13 file chunks, tail
    whole = b"".join(pieces)
    assert len(whole) == len(body)
    assert sum(sent) == len(content)
    assert _decode(whole, body.boundary) == ("file", "FOSSASIA 16.zip", content)


def test_multipart_file_names_cannot_break_the_headers(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK")
    body = MultipartFile(path, filename='evil"\r\nX-Injected: 1.zip')
    head = body.head.decode()
    assert "\r\nX-Injected" not in head and "%22%0D%0AX-Injected" in head


def test_a_file_that_shrinks_while_sent_is_an_error(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"x" * 1000)
    body = MultipartFile(path, chunk_size=100)
    pieces = iter(body)
    next(pieces)
    path.write_bytes(b"x" * 10)
    with pytest.raises(CliError, match="shrank"):
        list(pieces)


# --- resuming downloads ----------------------------------------------------------------------------------------

def test_resume_plan():
    assert resume_plan(206, {"Content-Range": "bytes 100-999/1000"}, 100) == ("append", 1000)
    assert resume_plan(200, {"Content-Length": "1000"}, 100) == ("restart", 1000)  # Range ignored: whole object
    assert resume_plan(200, {}, 0) == ("restart", None)
    assert resume_plan(416, {"Content-Range": "bytes */1000"}, 1000) == ("complete", 1000)
    assert resume_plan(416, {"Content-Range": "bytes */1000"}, 1500) == ("retry", None)
    with pytest.raises(CliError, match="not asked for"):
        resume_plan(206, {"Content-Range": "bytes 0-999/1000"}, 100)
    with pytest.raises(ValueError):
        resume_plan(416, {}, 0)


def test_part_path(tmp_path):
    assert part_path(tmp_path / "event1.zip") == tmp_path / "event1.zip.part"


def test_download_name_is_a_plain_file_name():
    task = {"event_id": 7, "result": {"download_url": "http://s/objects/k?filename=event7.ics&sig=x",
                                      "key": "exports/event7/t/event7.ics"}}
    assert download_name(task) == "event7.ics"
    task["result"] = {"key": "exports/event7/t/event7.xml"}
    assert download_name(task) == "event7.xml"
    task["result"] = {"download_url": "http://s/o?filename=../../etc/passwd"}
    assert download_name(task) == "passwd"
    assert download_name({"event_id": 7, "result": {}}) == "event7.zip"


# --- arguments and messages --------------------------------------------------------------------------------------

def test_task_ids_from_what_users_paste():
    for text in ("abc-1", "/v1/tasks/abc-1", "http://127.0.0.1:8000/v1/tasks/abc-1", "/v1/tasks/abc-1/"):
        assert task_id_of(text) == "abc-1"


def test_import_format_from_the_extension(tmp_path):
    assert import_format(tmp_path / "a.ZIP", None) == "json"
    assert import_format(tmp_path / "a.ics", None) == "ical"
    assert import_format(tmp_path, None) == "json"  # a folder is zipped
    assert import_format(tmp_path / "a.txt", "csv") == "csv"
    with pytest.raises(CliError, match="--format") as caught:
        import_format(tmp_path / "a.txt", None)
    assert caught.value.exit_code == 2


def test_global_options_before_or_after_the_command():
    parser = build_parser()
    args = parser.parse_args(["--json", "--url", "http://x", "export", "3", "--media", "image,audio"])
    assert (args.json, args.url, args.event, args.media, args.format) == (True, "http://x", 3, ["image", "audio"],
                                                                          "json")
    args = parser.parse_args(["export", "3", "--json", "--url", "http://y", "--media", "all", "-q"])
    assert (args.json, args.url, args.quiet, args.media) == (True, "http://y", True,
                                                             ["image", "audio", "video", "document"])
    assert parser.parse_args(["tasks", "--state", "success"]).state == "SUCCESS"


@pytest.mark.parametrize("argv", [["export", "x"], ["export", "0"], ["export", "1", "--media", "gif"],
                                  ["download"], ["tasks", "--kind", "mail"], ["export", "1", "--limit-rate", "x"], [],
                                  # seen: these reached the server (400, exit 1) or requests ("No connection
                                  # adapters", exit 1) instead of being usage errors
                                  ["events", "--page-size", "201"], ["tasks", "--page-size", "500"],
                                  ["--url", "127.0.0.1:8000", "formats"], ["formats", "--url", "localhost:8000"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "usage: eventport" in capsys.readouterr().err


def test_a_failed_import_lists_its_problems():
    task = {"id": "t1", "kind": "import", "state": "FAILURE", "result": {
        "code": "invalid_json", "message": "sessions is not JSON", "file": "sessions", "record_id": None,
        "field": None, "errors_total": 25,
        "errors": [{"code": "invalid_json", "message": "sessions is not JSON", "file": "sessions"},
                   {"code": "missing_field", "message": "no title", "file": "sessions", "record_id": 4,
                    "field": "title"}]}}
    error = failure(task)
    assert error.exit_code == FAILED and error.code == "invalid_json" and error.document is task
    assert error.line() == "eventport: error: import t1 failed: sessions is not JSON [sessions] (invalid_json)"
    assert error.details == ["  invalid_json: sessions is not JSON [sessions]",
                             "  missing_field: no title [sessions 4 title]",
                             "  ... 23 more problem(s): eventport task t1 --json"]


def test_error_documents():
    error = CliError("Task x does not exist.", FAILED, "task_not_found", 404)
    assert error.as_json() == {"error": {"code": "task_not_found", "message": "Task x does not exist.", "status": 404}}
    assert error.line() == "eventport: error: Task x does not exist. (task_not_found, HTTP 404)"
    assert CliError("boom").line() == "eventport: error: boom"


def test_eventport_url_without_a_scheme_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("EVENTPORT_URL", "127.0.0.1:8000")
    assert main(["formats"]) == 2
    assert "EVENTPORT_URL is not an http:// or https:// URL" in capsys.readouterr().err


def test_a_server_that_takes_the_connection_but_never_answers_is_not_called_down():
    import requests

    from eventport.api import unreachable
    from eventport.errors import UNAVAILABLE

    stuck = unreachable("http://x", requests.ReadTimeout())
    down = unreachable("http://x", requests.ConnectionError())
    assert (stuck.exit_code, down.exit_code) == (UNAVAILABLE, UNAVAILABLE)
    assert "did not answer in time" in str(stuck) and "is it running" not in str(stuck)
    assert "is it running" in str(down)
