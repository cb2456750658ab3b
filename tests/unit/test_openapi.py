"""The OpenAPI document (services/api_gateway/api_docs.py): valid OpenAPI 3.1, and exactly the gateway's routes.

Fails when a route of ``ApiGatewayService`` has no ``Op`` (or an ``Op`` names no route), when the document is not
valid OpenAPI, or when a route's documentation misses what every route of its kind must say.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
from openapi_spec_validator import validate

from services.api_gateway import api_docs, openapi
from services.api_gateway.service import ApiGatewayService
from shared.http import HttpEntrypoint

SERVER = "http://gateway.example"


def gateway_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every ``@http`` entrypoint of the gateway."""
    routes = set()
    for attr in vars(ApiGatewayService).values():
        for entrypoint in getattr(attr, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, HttpEntrypoint):
                for method in entrypoint.method.split(","):
                    routes.add((method.strip().upper(), openapi.openapi_path(entrypoint.url)))
    return routes


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi.build_document(api_docs.ROUTES, SERVER)


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}


def error_codes(op: dict, status: int) -> set[str]:
    answer = op["responses"].get(str(status))
    if answer is None:
        return set()
    schema = answer["content"]["application/json"]["schema"]["allOf"][1]
    return set(schema["properties"]["error"]["properties"]["code"]["enum"])


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_gateway_route_is_documented(document):
    missing = gateway_routes() - documented(document)
    assert not missing, f"routes of service.py without an Op in services/api_gateway/api_docs.py: {sorted(missing)}"


def test_every_documented_route_exists(document):
    extra = documented(document) - gateway_routes()
    assert not extra, f"Ops in services/api_gateway/api_docs.py that are no route of service.py: {sorted(extra)}"


def test_the_introspection_sees_the_routes():
    # the two tests above compare against this: it must find routes of every kind (several methods, converters)
    routes = gateway_routes()
    assert ("GET", "/v1/events/{event_id}/exports/{path}") in routes
    assert {("GET", "/v1/admin/storage-backends/{identifier}"),
            ("DELETE", "/v1/admin/storage-backends/{identifier}")} <= routes
    assert ("POST", "/v1/upload/files") in routes
    assert len(routes) == len(api_docs.ROUTES)


def test_each_route_is_documented_once():
    keys = [(op.method, op.path) for op in api_docs.ROUTES]
    assert len(keys) == len(set(keys))


def test_login_routes_need_the_bearer_token_and_public_ones_say_so(document):
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            codes = error_codes(op, 401)
            if "security" in op:
                assert op["security"] == [] and "token_revoked" not in codes, (method, path)
            else:
                assert set(openapi.AUTH_ERRORS) <= codes, (method, path)
    public = {(m.upper(), p) for p, ops in document["paths"].items() for m, op in ops.items() if "security" in op}
    assert ("POST", "/v1/auth/login") in public and ("GET", "/v1/events/{event_id}/schedule.{extension}") in public
    assert ("GET", "/v1/events") not in public


def test_every_error_answer_lists_its_codes_and_no_route_documents_a_500(document):
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert "500" not in op["responses"], (method, path)
            for status, answer in op["responses"].items():
                if int(status) >= 400 and not (path == "/health" and status == "503"):
                    schema = answer["content"]["application/json"]["schema"]
                    codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                    assert codes and all(f"`{c}`" in answer["description"] for c in codes), (method, path, status)


def test_headers_that_matter_are_documented(document):
    paths = document["paths"]
    assert "Location" in paths["/v1/events/{event_id}/export/{format}"]["post"]["responses"]["202"]["headers"]
    assert "Retry-After" in paths["/v1/auth/login"]["post"]["responses"]["429"]["headers"]
    feed = paths["/v1/events/{event_id}/schedule.{extension}"]["get"]["responses"]
    assert {"ETag", "Last-Modified"} <= set(feed["200"]["headers"]) and "304" in feed
    assert "Location" in paths["/media/{key}"]["get"]["responses"]["302"]["headers"]


def test_pagination_adds_limit_cursor_next_cursor_and_link():
    op = openapi.Op("GET", "/v1/things", "things", {200: openapi.list_of(openapi.responses.FormatSchema)},
                    paginated=True)
    document = openapi.build_document((op,), SERVER)
    validate(document)
    got = document["paths"]["/v1/things"]["get"]
    assert {p["name"] for p in got["parameters"]} == {"limit", "cursor"}
    limit = next(p for p in got["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, openapi.MAX_PAGE_SIZE)
    answer = got["responses"]["200"]
    assert "Link" in answer["headers"]
    body = answer["content"]["application/json"]["schema"]
    assert body["properties"]["next_cursor"]["type"] == ["string", "null"] and "next_cursor" in body["required"]
    assert {"invalid_parameter", "invalid_cursor"} <= error_codes(got, 400)


def test_the_served_document_is_the_built_one_and_names_the_gateway(document):
    response = api_docs.serve("/openapi.json", None, SERVER)
    assert response.status_code == 200 and response.mimetype == "application/json"
    served = json.loads(response.get_data())
    assert served == json.loads(json.dumps(document))
    assert served["servers"] == [{"url": SERVER}]


def test_the_docs_page_and_its_files_come_from_the_package():
    page = api_docs.serve("/docs", None, SERVER)
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html and "http" not in html  # everything from this gateway: no CDN
    for asset, content_type in openapi.ASSETS.items():
        assert f"/docs/{asset}" in html or asset.startswith("favicon-16"), asset
        served = api_docs.serve(f"/docs/{asset}", asset, SERVER)
        assert served.content_type.startswith(content_type)
        assert served.get_data() == (resources.files("swagger_ui") / "static" / asset).read_bytes()


def test_the_docs_serve_no_other_file():
    from shared.http import ApiError

    for asset in ("../__init__.py", "swagger-ui.js.map", "index.html"):
        with pytest.raises(ApiError) as refused:
            api_docs.serve(f"/docs/{asset}", asset, SERVER)
        assert refused.value.status == 404
