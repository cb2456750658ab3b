"""The OpenAPI 3.1 document of the gateway, built from marshmallow schemas with apispec, and the pages that serve it.

A route is documented by one ``Op`` in ``api_docs.ROUTES``: method, path, what it takes (a query or body schema
from ``schemas``), what it answers (schemas from ``responses``), and the ``error.code`` values of each refusal.
What every route of a kind shares is added here, never repeated there: the 401 codes of routes that need a login,
the 400/408/413 of a JSON body, the 404 of an id in the path, the 408/503 of a streamed upload, the ``limit`` /
``cursor`` / ``next_cursor`` / ``Link`` of a paginated list. A 500 is never documented: it is always a bug.

``/openapi.json`` serves the document, ``/docs`` a Swagger UI page over it, from the files of the ``swagger-ui-py``
package (no CDN: the page works offline).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema
from werkzeug import Response

from services.api_gateway import responses, schemas
from shared.http import MAX_DB_INT, ApiError
from shared.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"

# --- what routes share --------------------------------------------------------------------------------------------

AUTH_ERRORS = ("unauthorized", "invalid_token", "token_expired", "token_revoked")
JSON_BODY_ERRORS = {400: ("invalid_encoding", "invalid_json", "too_deep", "invalid_text"),
                    408: ("request_timeout", "incomplete_body"), 413: ("too_large",)}
STREAM_ERRORS = {408: ("request_timeout", "incomplete_body", "upload_too_slow"), 503: ("server_busy",)}
PATH_ERRORS = {404: ("not_found",)}  # no route matches (a path value of the wrong type) or an id no row can have
PAGE_ERRORS = {400: ("invalid_parameter", "invalid_cursor")}
ID_PARAM = {"type": "integer", "minimum": 0, "maximum": MAX_DB_INT}  # larger: 404 not_found, no database asked

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "where the created or accepted thing is (or the redirect's target)",
                 "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}},
    "Link": {"description": "`<absolute URL of the next page>; rel=\"next\"` while there is a next page",
             "schema": {"type": "string"}},
    "ETag": {"description": "the feed's version, for If-None-Match", "schema": {"type": "string"}},
    "Last-Modified": {"description": "when the feed last changed, for If-Modified-Since", "schema": {"type": "string"}},
    "Cache-Control": {"description": "how long a client or proxy may reuse the answer", "schema": {"type": "string"}},
}
# error statuses that always tell the client when to come back
RETRY_STATUSES = (429,)


@dataclass(frozen=True)
class Answer:
    """One documented answer: its body (a schema class, a JSON schema dict, or ``None`` for no body), its media
    types and the headers that matter."""

    body: type[Schema] | dict[str, Any] | None = None
    description: str = ""
    content_types: tuple[str, ...] = (JSON,)
    headers: tuple[str, ...] = ()


def list_of(item: type[Schema], description: str = "", **extra: type[Schema]) -> Answer:
    """``{"data": [item, ...]}``, the shape of every list (``extra``: more keys the answer always has)."""
    return Answer({"type": "object", "required": ["data", *extra], "additionalProperties": False,
                   "properties": {"data": {"type": "array", "items": item}, **extra}}, description)


def multipart(*files: str, many: tuple[str, ...] = ()) -> dict[str, Any]:
    """A ``multipart/form-data`` body with one file in each of ``files`` (and a list of files in each of ``many``)."""
    binary = {"type": "string", "format": "binary"}
    return {"type": "object", "properties": {**{name: binary for name in files},
                                             **{name: {"type": "array", "items": binary} for name in many}}}


@dataclass(frozen=True, eq=False)
class Op:
    """One route as the contract documents it (``api_docs.ROUTES``).

    ``path`` uses OpenAPI templates (``/v1/events/{event_id}``); ``params`` gives each path parameter a JSON schema
    (default: a string). ``answers`` maps success statuses to an ``Answer`` or a schema class; ``errors`` maps
    error statuses to their ``error.code`` values. ``public``: no login. ``body``: a ``schemas`` class (JSON) or a
    ``multipart(...)`` dict. ``stream``: the body is read as it arrives (uploads). ``paginated``: the list
    contract (``limit``, ``cursor``, ``next_cursor``, ``Link``).
    """

    method: str
    path: str
    summary: str
    answers: dict[int, Answer | type[Schema]]
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    public: bool = False
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    query: type[Schema] | None = None
    body: type[Schema] | dict[str, Any] | None = None
    body_required: bool = True
    stream: bool = False
    paginated: bool = False
    request_headers: dict[str, str] = field(default_factory=dict)  # name -> what it is
    tag: str | None = None

    @property
    def path_names(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def all_errors(self) -> dict[int, tuple[str, ...]]:
        """This route's refusals with those shared by every route of its kind."""
        merged: dict[int, set[str]] = {}
        shared: list[dict[int, tuple[str, ...]]] = [self.errors]
        if not self.public:
            shared.append({401: AUTH_ERRORS})
        if self.path_names:
            shared.append(PATH_ERRORS)
        if isinstance(self.body, type):
            shared.append(JSON_BODY_ERRORS)
        if self.stream:
            shared.append(STREAM_ERRORS)
        if self.paginated:
            shared.append(PAGE_ERRORS)
        for part in shared:
            for status, codes in part.items():
                merged.setdefault(status, set()).update(codes)
        return {status: tuple(sorted(codes)) for status, codes in sorted(merged.items())}


# --- the document -------------------------------------------------------------------------------------------------

def _error_answer(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": "`error.code`: " + ", ".join(f"`{c}`" for c in codes),
        "content": {JSON: {"schema": {"allOf": [
            {"$ref": "#/components/schemas/Error"},
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]}}},
    }
    if status in RETRY_STATUSES or (status == 503 and "server_busy" in codes):
        answer["headers"] = {"Retry-After": HEADERS["Retry-After"]}
    return answer


def _paged(body: Any) -> Any:
    """A list answer with the pagination contract's ``next_cursor``."""
    if not isinstance(body, dict) or "data" not in body.get("properties", {}):
        return body
    return {**body, "required": [*body["required"], "next_cursor"],
            "properties": {**body["properties"], "next_cursor": {"type": ["string", "null"],
                                                                 "description": "null on the last page"}}}


def _answer(op: Op, status: int, answer: Answer | type[Schema]) -> dict[str, Any]:
    if not isinstance(answer, Answer):
        answer = Answer(answer)
    headers = list(answer.headers)
    body = answer.body
    if op.paginated and status == 200:
        body = _paged(body)
        headers.append("Link")
    doc: dict[str, Any] = {"description": answer.description or f"{status}"}
    if body is not None:
        doc["content"] = {ctype: {"schema": body} for ctype in answer.content_types}
    elif answer.content_types != (JSON,):  # a body that is not JSON (a page, a file)
        doc["content"] = {ctype: {"schema": {"type": "string"}} for ctype in answer.content_types}
    if headers:
        doc["headers"] = {name: HEADERS[name] for name in headers}
    return doc


def _parameters(op: Op) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in op.path_names:
        spec = dict(op.params.get(name, {"type": "string"}))
        description = spec.pop("description", "")
        params.append({"in": "path", "name": name, "required": True, "schema": spec,
                       **({"description": description} if description else {})})
    if op.query is not None:
        params.append({"in": "query", "schema": op.query})
    for name, description in op.request_headers.items():
        params.append({"in": "header", "name": name, "required": False, "schema": {"type": "string"},
                       "description": description})
    if op.paginated:  # an empty value is an absent one (shared/pagination.py)
        params += [
            {"in": "query", "name": "limit", "required": False, "description": "items per page",
             "allowEmptyValue": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE}},
            {"in": "query", "name": "cursor", "required": False, "schema": {"type": "string"},
             "allowEmptyValue": True, "description": "`next_cursor` of the previous page (opaque)"},
        ]
    return params


def _operation(op: Op) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag or _tag(op.path)],
        "responses": {str(status): _answer(op, status, answer) for status, answer in sorted(op.answers.items())},
    }
    for status, codes in op.all_errors().items():
        operation["responses"].setdefault(str(status), _error_answer(status, codes))
    if op.description:
        operation["description"] = op.description
    parameters = _parameters(op)
    if parameters:
        operation["parameters"] = parameters
    if op.public:
        operation["security"] = []
    if op.body is not None:
        media = JSON if isinstance(op.body, type) else "multipart/form-data"
        operation["requestBody"] = {"required": op.body_required, "content": {media: {"schema": op.body}}}
    return operation


def _operation_id(op: Op) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", op.path.replace("{", "by_").replace("}", "")).strip("_")
    return f"{op.method.lower()}_{words}"


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "v1"]
    return parts[0] if parts else "system"


def _empty_means_absent(converter: Any, field: Any, **kwargs: Any) -> dict[str, Any]:
    """``allowEmptyValue`` for the query fields whose schema reads ``?name=`` as no value
    (``metadata={"allowEmptyValue": True}``)."""
    return {"allowEmptyValue": True} if field.metadata.get("allowEmptyValue") else {}


def build_document(routes: tuple[Op, ...], server_url: str | None = None, version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (``server_url``: the gateway's public address)."""
    spec = APISpec(title="Event-data portability platform API", version=version, openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()], info={"description": __doc__.split("\n\n")[0]},
                   servers=[{"url": server_url}] if server_url else [],
                   security=[{"bearerAuth": []}])
    plugin = spec.plugins[0]
    for custom in (schemas.StrictBoolean, schemas.QueryFlag):
        plugin.map_to_openapi_type(custom, "boolean", None)
    plugin.converter.add_parameter_attribute_function(_empty_means_absent)
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "the access_token of POST /v1/auth/login; 'Authorization: JWT <token>' works too"})
    spec.components.schema("Error", schema=responses.ErrorSchema)
    by_path: dict[str, dict[str, Any]] = {}
    for op in routes:
        by_path.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


# --- routes as the service declares them, for the completeness test --------------------------------------------------

def openapi_path(rule: str) -> str:
    """A Werkzeug rule as an OpenAPI path: ``/v1/events/<int:event_id>`` -> ``/v1/events/{event_id}``."""
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule)


# --- serving ------------------------------------------------------------------------------------------------------

_BUILT: dict[tuple[int, str], bytes] = {}


def document_response(routes: tuple[Op, ...], server_url: str) -> Response:
    """``GET /openapi.json`` (built once per process)."""
    key = (id(routes), server_url)
    if key not in _BUILT:
        _BUILT[key] = json.dumps(build_document(routes, server_url)).encode()
    return Response(_BUILT[key], mimetype=JSON,
                    headers={"Cache-Control": "public, max-age=300"})


# Swagger UI's files, from the swagger-ui-py package; only these may be served.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
          "swagger-ui-standalone-preset.js": "text/javascript", "favicon-32x32.png": "image/png",
          "favicon-16x16.png": "image/png"}

DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"><title>Event-data portability platform API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"><link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.onload = () => {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                               presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
                               layout: "StandaloneLayout"});
};
</script>
</body>
</html>
"""


def docs_page(asset: str | None = None) -> Response:
    """``GET /docs`` (the page) and ``GET /docs/<asset>`` (Swagger UI's files)."""
    if asset is None:
        return Response(DOCS_PAGE, mimetype="text/html")
    if asset not in ASSETS:
        raise ApiError(404, "not_found", f"No file {asset[:80]!r} in the API docs.")
    data = (resources.files("swagger_ui") / "static" / asset).read_bytes()
    return Response(data, content_type=ASSETS[asset], headers={"Cache-Control": "public, max-age=86400"})
