"""shared.http on a real nameko web server (HTTP-only service: no broker needed)."""

from __future__ import annotations

import logging

import pytest
import requests
from nameko.containers import ServiceContainer
from werkzeug.exceptions import Forbidden

from shared.http import ApiError, http, json_response
from tests.conftest import free_port


class Probe:
    name = "probe"

    @http("GET", "/api-error")
    def api_error(self, request):
        raise ApiError(409, "conflict_here", "It clashes.", headers={"Retry-After": "5"})

    @http("POST", "/json")
    def needs_json(self, request):
        return json_response({"got": request.get_json()})  # 415 without a JSON content type (Werkzeug 3)

    @http("GET", "/forbidden")
    def forbidden(self, request):
        raise Forbidden("Not yours.")

    @http("GET", "/boom")
    def boom(self, request):
        raise RuntimeError("db password is hunter2")

    @http("GET", "/value/<int:n>", expected_exceptions=ValueError)
    def value(self, request, n):
        raise ValueError(f"bad value {n}")

    @http("PUT,POST", "/echo-size")
    def echo_size(self, request):
        size = 0
        while chunk := request.stream.read(65536):
            size += len(chunk)
        return json_response({"size": size}, status=201, headers={"X-Seen": "yes"})

    @http("POST", "/upload")
    def upload(self, request):
        return json_response({name: len(f.read()) for name, f in request.files.items()})

    @http("GET", "/named/<name>")
    def named(self, request, name):
        return json_response({"name": name})

    @http("GET", "/mismatch/<item>")
    def mismatch(self, request, other):  # the route's variable is not a parameter: a programming error
        return json_response({"other": other})

    @http("GET", "/plain")
    def plain(self, request):
        return 200, "plain text still works"


@pytest.fixture(scope="module")
def base():
    port = free_port()
    container = ServiceContainer(Probe, {"WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"})
    container.start()
    yield f"http://127.0.0.1:{port}"
    container.stop()


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["error"]


def test_api_error(base):
    response = requests.get(f"{base}/api-error", timeout=5)
    assert error_of(response, 409) == {"code": "conflict_here", "message": "It clashes."}
    assert response.headers["Retry-After"] == "5"


def test_http_exceptions_keep_their_status(base):
    assert error_of(requests.post(f"{base}/json", data="{}", timeout=5), 415)["code"] == "unsupported_media_type"
    assert requests.post(f"{base}/json", json={"a": 1}, timeout=5).json() == {"got": {"a": 1}}
    assert error_of(requests.get(f"{base}/forbidden", timeout=5), 403) == {"code": "forbidden", "message": "Not yours."}


def test_unexpected_errors_are_500_without_details(base, caplog):
    with caplog.at_level(logging.ERROR):
        response = requests.get(f"{base}/boom", timeout=5)
    assert error_of(response, 500) == {"code": "internal_error", "message": "Internal server error."}
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "hunter2" in caplog.text  # the details go to the log


def test_expected_exceptions_are_400(base):
    error = error_of(requests.get(f"{base}/value/3", timeout=5), 400)
    assert error == {"code": "bad_request", "message": "bad value 3"}


def test_routing_errors_are_json(base):
    assert error_of(requests.get(f"{base}/missing", timeout=5), 404)["code"] == "not_found"
    response = requests.delete(f"{base}/echo-size", timeout=5)
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) >= {"PUT", "POST"}


def test_a_nul_in_a_path_names_nothing(base):
    # PostgreSQL refuses NUL in text: GET /v1/tasks/a%00b was a 500 there
    assert requests.get(f"{base}/named/ab", timeout=5).json() == {"name": "ab"}
    assert error_of(requests.get(f"{base}/named/a%00b", timeout=5), 404)["code"] == "not_found"


def test_request_bodies_are_readable_chunked_or_not(base):
    chunked = requests.put(f"{base}/echo-size", data=(b"x" * 1000 for _ in range(300)), timeout=5)
    assert chunked.request.headers["Transfer-Encoding"] == "chunked"
    assert chunked.status_code == 201 and chunked.json() == {"size": 300_000}
    assert chunked.headers["X-Seen"] == "yes"
    assert requests.post(f"{base}/echo-size", data=b"y" * 12345, timeout=5).json() == {"size": 12345}
    assert requests.post(f"{base}/echo-size", timeout=5).json() == {"size": 0}


def test_chunked_multipart_upload(base):
    # A streamed multipart body has no Content-Length: without shared.http's fix Werkzeug sees no files at all.
    boundary = "b0undary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'.encode(),
        b"z" * 200_000,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    response = requests.post(
        f"{base}/upload",
        data=iter(parts),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=5,
    )
    assert response.json() == {"file": 200_000}


def test_nameko_style_results_still_work(base):
    response = requests.get(f"{base}/plain", timeout=5)
    assert response.status_code == 200 and response.text == "plain text still works"


def test_a_route_whose_handler_does_not_take_its_variables_is_refused_not_called(base):
    assert requests.get(f"{base}/named/ada", timeout=5).json() == {"name": "ada"}
    response = requests.get(f"{base}/mismatch/x", timeout=5)
    assert error_of(response, 400)["code"] == "bad_request"  # nameko's IncorrectSignature, as before
