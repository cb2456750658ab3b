"""CORS policy and middleware (shared/cors.py) over a small Werkzeug app; the services are checked end to end in
tests/test_task_contract_e2e.py."""

from __future__ import annotations

import pytest
from werkzeug.routing import Map, Rule
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from shared import cors

APP_ORIGIN = "https://app.example.org"


def _app(environ, start_response):
    request = Request(environ)
    adapter = URL_MAP.bind_to_environ(environ)
    try:
        adapter.match()
    except Exception as exc:  # 404 / 405 as the real app answers them
        return exc(environ, start_response)
    response = Response(b"zip", headers={"Content-Disposition": "attachment; filename=event1.zip",
                                         "Vary": "Accept-Encoding"})
    if request.method == "DELETE":
        response.status_code = 204
    return response(environ, start_response)


URL_MAP = Map([Rule("/objects/<path:key>", methods=["GET", "HEAD"]), Rule("/v1/tasks/<t>", methods=["GET"]),
               Rule("/v1/events/<int:e>/exports/<t>", methods=["GET", "DELETE"])])


class _Wrapped:
    url_map = URL_MAP

    def __call__(self, environ, start_response):
        return _app(environ, start_response)


def _client(value: str) -> Client:
    return Client(cors.wrap(_Wrapped(), cors.parse_origins(value)))


def test_origins_are_normalized_and_checked():
    assert cors.parse_origins("") == ()
    assert cors.parse_origins(" https://App.Example.org:443/ , http://localhost:4200,*") == (
        "https://app.example.org", "http://localhost:4200", "*")
    for bad in ("app.example.org", "ftp://x.org", "https://x.org/path", "null", "https://u:p@x.org"):
        with pytest.raises(ValueError) as err:
            cors.parse_origins(bad)
        assert bad in str(err.value)


def test_off_by_default_nothing_changes():
    client = _client("")
    r = client.get("/v1/tasks/1", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers and r.headers["Vary"] == "Accept-Encoding"
    r = client.options("/v1/tasks/1", headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"})
    assert r.status_code == 405


def test_listed_origin_gets_headers_and_credentials_others_nothing():
    client = _client(f"{APP_ORIGIN},http://localhost:4200")
    r = client.get("/objects/a.zip", headers={"Origin": APP_ORIGIN})
    assert r.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Content-Disposition", "Content-Length", "Content-Range", "Accept-Ranges"} <= exposed
    assert r.headers["Vary"] == "Accept-Encoding, Origin"
    for origin in ("https://evil.example.org", "null", "https://app.example.org.evil.org"):
        r = client.get("/objects/a.zip", headers={"Origin": origin})
        assert not any(k.lower().startswith("access-control-") for k in r.headers.keys()), origin
        assert "Origin" in r.headers["Vary"]


def test_preflight_lists_the_path_methods_and_refuses_other_origins():
    client = _client(APP_ORIGIN)
    r = client.options("/v1/events/1/exports/t", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 204
    assert set(r.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "DELETE", "OPTIONS"}
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    r = client.options("/v1/events/1/exports/t", headers={
        "Origin": "https://evil.example.org", "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    assert r.get_json()["error"]["code"] == "cors_origin_not_allowed"
    # An unknown path is the app's 404, not a CORS answer.
    r = client.options("/nowhere", headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"})
    assert r.status_code == 404


def test_wildcard_never_goes_with_credentials():
    client = _client(f"*,{APP_ORIGIN}")
    r = client.get("/objects/a.zip", headers={"Origin": "https://other.example.org"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers
    r = client.get("/objects/a.zip", headers={"Origin": APP_ORIGIN})
    assert (r.headers["Access-Control-Allow-Origin"], r.headers["Access-Control-Allow-Credentials"]) == (
        APP_ORIGIN, "true")
