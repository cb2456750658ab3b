"""The API contract: one ``Op`` per route of ``service.py``, in the order of the README's API table.

To document a new route, add its ``Op`` here: what it takes (``schemas``), what it answers (``responses``) and the
``error.code`` of each refusal it makes itself; what every route of its kind shares (401 without a login, a JSON
body's 400s, a path id's 404, pagination) is added by ``openapi.Op.all_errors``. ``tests/unit/test_openapi.py``
fails while a route of the service is missing here (or a path here is no route), and the contract test
(``tests/e2e/test_api_contract_e2e.py``) fuzzes every ``Op`` against the running stack.
"""

from __future__ import annotations

from werkzeug import Response

from services.api_gateway import openapi
from services.api_gateway import responses as r
from services.api_gateway import schemas as s
from services.api_gateway.openapi import ID_PARAM, Answer, Op, list_of, multipart
from shared.archive.formats import FORMATS
from shared.schedule.feeds import FEEDS
from shared.schedule.readers import ALIASES, IMPORT_FORMATS

EVENT = {"event_id": {**ID_PARAM, "description": "the event's id"}}
FORBIDDEN = ("forbidden",)
ACCEPTED = Answer(r.TaskAcceptedSchema, "queued: poll `task_url` (also in `Location`)", headers=("Location",))
REDIRECT = Answer(None, "a fresh signed link in `Location`", headers=("Location",))
STORAGE_DOWN = ("storage_unavailable",)
UPLOAD_REFUSALS = ("not_multipart", "empty_body", "malformed_multipart", "incomplete_body", "missing_file",
                   "empty_file", "invalid_request")
UPLOAD_QUOTA = ("too_large", "quota_exceeded")
BACKEND_ID = {"identifier": {"type": "string", "description": "a record's storage_backend_id, or the built-ins "
                                                                "`default` and `local`"}}


def _upload(path: str, summary: str, image: bool = False) -> Op:
    return Op("POST", path, summary, {200: r.UploadAnswerSchema}, query=s.UploadQuerySchema, stream=True,
              body=multipart("file", many=("files[]",)), tag="upload",
              description="One file in `file` (answer `{\"url\": \"...\"}`) or up to 10 in `files[]` (answer a "
                          "list of URLs, body order); all or nothing." + (
                              " JPEG, PNG, GIF or WebP, judged by content; SVG and markup are refused."
                              if image else ""),
              errors={400: ("invalid_parameter", *UPLOAD_REFUSALS, "invalid_file_name", "too_many_files",
                            *(("not_an_image",) if image else ())),
                      413: UPLOAD_QUOTA, 503: (*STORAGE_DOWN, "storage_error")})


def _backend_body_errors() -> dict[int, tuple[str, ...]]:
    return {400: ("invalid_storage_backend", "storage_backend_check_failed"), 403: FORBIDDEN, 503: STORAGE_DOWN}


WEBHOOK = {"webhook_id": {**ID_PARAM, "description": "the webhook's id"}}
WEBHOOKS_DOWN = ("webhooks_unavailable",)
WEBHOOK_ERRORS = {403: FORBIDDEN, 404: ("webhook_not_found",), 503: WEBHOOKS_DOWN}
FEED_TYPES = tuple(dict.fromkeys(FORMATS[identifier].content_type for identifier in FEEDS.values()))
DOCS_ASSET = {"asset": {"type": "string", "enum": sorted(openapi.ASSETS)}}

ROUTES: tuple[Op, ...] = (
    Op("POST", "/v1/auth/login", "Log in: an access token", {200: r.TokenSchema}, public=True, body=s.LoginSchema,
       errors={400: ("invalid_request",), 401: ("invalid_credentials",), 429: ("too_many_attempts",)},
       description="Failed logins are counted per account and per client address; too many: 429 with Retry-After "
                   "(even with the right password) until the window ends."),
    Op("GET", "/v1/me", "The caller", {200: r.MeSchema}, tag="auth"),
    Op("GET", "/v1/events", "The events the caller organizes (all of them for admins), newest first",
       {200: list_of(r.EventSummarySchema)}, paginated=True),
    Op("GET", "/v1/events/{event_id}", "One event with its record counts", {200: r.EventDetailSchema},
       params=EVENT, errors={403: FORBIDDEN, 404: ("event_not_found",)}),
    Op("PUT", "/v1/events/{event_id}/publication", "Publish or withdraw the event's schedule feeds",
       {200: r.PublicationAnswerSchema}, params=EVENT, body=s.PublicationSchema,
       errors={400: ("invalid_request",), 403: FORBIDDEN, 404: ("event_not_found",)}),
    Op("GET", "/v1/formats", "The export formats", {200: list_of(r.FormatSchema)}, public=True, tag="exports"),
    Op("POST", "/v1/events/{event_id}/export/{format}", "Export the event in a format", {202: ACCEPTED},
       params={**EVENT, "format": {"type": "string", "enum": list(FORMATS), "description": "see GET /v1/formats"}},
       body=s.ExportRequestSchema, body_required=False, tag="exports",
       errors={400: ("invalid_request", "unknown_storage", "storage_inactive"), 403: FORBIDDEN,
               404: ("event_not_found", "unknown_format"), 429: ("too_many_jobs",),
               503: (*STORAGE_DOWN, "broker_unavailable")}),
    Op("GET", "/v1/events/{event_id}/schedule.{extension}", "A published event's public schedule feed",
       {200: Answer({}, "the feed", content_types=FEED_TYPES, headers=("ETag", "Last-Modified", "Cache-Control")),
        304: Answer(None, "not modified since If-None-Match / If-Modified-Since",
                    headers=("ETag", "Last-Modified", "Cache-Control"))},
       public=True, tag="feeds",
       params={**EVENT, "extension": {"type": "string", "enum": list(FEEDS),
                                      "description": "xml: frab, json: schedule.json, ics: iCal"}},
       request_headers={"If-None-Match": "an ETag of an earlier answer",
                        "If-Modified-Since": "the Last-Modified of an earlier answer"},
       errors={404: ("not_found", "schedule_not_published")}),
    Op("GET", "/v1/events/{event_id}/roles", "Who organizes the event (organizers, co-organizers, admins)",
       {200: list_of(r.RoleSchema)}, params=EVENT, paginated=True, tag="roles",
       errors={403: FORBIDDEN, 404: ("event_not_found",)}),
    Op("POST", "/v1/events/{event_id}/roles", "Give a user a role in the event (organizers, admins)",
       {201: Answer(r.RoleSchema, "granted"), 200: Answer(r.RoleSchema, "the user held this role already")},
       params=EVENT, body=s.RoleGrantSchema, tag="roles",
       errors={400: ("invalid_request",), 403: FORBIDDEN, 404: ("event_not_found", "user_not_found")}),
    Op("DELETE", "/v1/events/{event_id}/roles/{user_id}", "Take a user's role (or all their roles) in the event",
       {204: Answer(None, "removed")}, query=s.RoleQuerySchema, tag="roles",
       params={**EVENT, "user_id": {**ID_PARAM, "description": "the user's id"}},
       errors={400: ("invalid_parameter",), 403: FORBIDDEN, 404: ("event_not_found", "role_not_found"),
               409: ("last_organizer",)}),
    Op("GET", "/v1/tasks", "The caller's own tasks, newest first", {200: list_of(r.TaskListItemSchema)},
       query=s.TaskListQuerySchema, paginated=True, errors={400: ("invalid_parameter",)}),
    Op("GET", "/v1/tasks/{task_id}", "An export or import task (the Task contract)", {200: r.TaskSchema},
       params={"task_id": {"type": "string"}}, errors={403: FORBIDDEN, 404: ("task_not_found",)}),
    Op("GET", "/v1/events/{event_id}/exports", "The event's export history", {200: list_of(r.ExportEntrySchema)},
       params=EVENT, paginated=True, errors={403: FORBIDDEN, 404: ("event_not_found",)}, tag="exports"),
    Op("GET", "/v1/events/{event_id}/exports/{path}", "Download an export: a redirect to a fresh signed link",
       {302: REDIRECT}, tag="exports",
       params={**EVENT, "path": {"type": "string", "description": "the export's task id (a file name may follow "
                                                                  "after a slash)"}},
       errors={403: FORBIDDEN, 404: ("event_not_found", "export_not_found"), 409: ("export_not_ready",),
               410: ("export_gone",), 502: ("storage_error",), 503: STORAGE_DOWN}),
    Op("DELETE", "/v1/events/{event_id}/exports/{path}", "Delete an export's archive now (organizers, admins)",
       {204: Answer(None, "deleted: its links answer 410 from now on")}, tag="exports",
       params={**EVENT, "path": {"type": "string", "description": "the export's task id"}},
       errors={403: FORBIDDEN, 404: ("export_not_found",), 409: ("export_not_ready",), 502: ("storage_error",),
               503: STORAGE_DOWN}),
    Op("GET", "/v1/storage-backends", "The storage backends an export may name in `storage`",
       {200: list_of(r.BackendChoiceSchema)}, paginated=True, errors={503: STORAGE_DOWN}, tag="exports"),
    Op("POST", "/v1/events/import/{fmt}", "Import an event from an uploaded archive or schedule file",
       {202: ACCEPTED}, query=s.ImportQuerySchema, stream=True, body=multipart("file"), tag="imports",
       params={"fmt": {"type": "string", "enum": [*IMPORT_FORMATS, *sorted(ALIASES)],
                       "description": "json: an Open Event .zip; the others: a schedule file (any name)"}},
       errors={400: ("invalid_parameter", *UPLOAD_REFUSALS, "invalid_file_type"), 404: ("unknown_format",),
               413: UPLOAD_QUOTA, 429: ("too_many_jobs",),
               503: (*STORAGE_DOWN, "storage_error", "broker_unavailable")}),
    Op("GET", "/v1/import-jobs", "The caller's imports, newest first", {200: list_of(r.ImportJobSchema)},
       paginated=True, tag="imports"),
    _upload("/v1/upload/file", "Upload files"),
    _upload("/v1/upload/files", "Upload files (the Open Event Server's path)"),
    _upload("/v1/upload/image", "Upload images", image=True),
    Op("GET", "/media/{key}", "Uploaded or re-hosted media: a redirect to a fresh signed link",
       {302: Answer(None, "a fresh signed link in `Location`", headers=("Location", "Cache-Control"))},
       public=True, params={"key": {"type": "string"}}, tag="upload",
       errors={404: ("not_found",), 410: ("media_gone",), 503: STORAGE_DOWN}),
    Op("GET", "/v1/admin/mails", "Admins: recent mail deliveries, newest first",
       {200: list_of(r.MailDeliverySchema)}, paginated=True,
       errors={403: FORBIDDEN, 503: ("mailer_unavailable",)}),
    Op("GET", "/v1/admin/storage-backends", "Admins: the storage backend records",
       {200: list_of(r.BackendRecordSchema, default=r.DefaultBackendSchema)}, paginated=True,
       errors={403: FORBIDDEN, 503: STORAGE_DOWN}),
    Op("POST", "/v1/admin/storage-backends", "Admins: create a storage backend record (checked first)",
       {201: Answer(r.BackendRecordSchema, "created", headers=("Location",))}, body=s.BackendCreateSchema,
       errors={**_backend_body_errors(), 409: ("storage_backend_exists",)}),
    Op("GET", "/v1/admin/storage-backends/{identifier}", "Admins: one storage backend record",
       {200: r.BackendRecordSchema}, params=BACKEND_ID,
       errors={403: FORBIDDEN, 404: ("storage_backend_not_found",), 503: STORAGE_DOWN}),
    Op("PATCH", "/v1/admin/storage-backends/{identifier}", "Admins: change a record (config merged)",
       {200: r.BackendRecordSchema}, params=BACKEND_ID, body=s.BackendUpdateSchema,
       errors={**_backend_body_errors(), 404: ("storage_backend_not_found",)}),
    Op("DELETE", "/v1/admin/storage-backends/{identifier}", "Admins: deactivate a record (never removed)",
       {200: r.BackendRecordSchema}, params=BACKEND_ID,
       errors={403: FORBIDDEN, 404: ("storage_backend_not_found",), 503: STORAGE_DOWN}),
    Op("POST", "/v1/webhooks", "Register a webhook (admins; organizers for their own events)",
       {201: Answer(r.WebhookCreatedSchema, "registered: the secret is shown only now", headers=("Location",))},
       body=s.WebhookSchema, tag="webhooks",
       errors={400: ("invalid_request", "invalid_webhook_url"), 403: FORBIDDEN, 404: ("event_not_found",),
               503: WEBHOOKS_DOWN}),
    Op("GET", "/v1/webhooks", "The webhooks (admins: all; others: their own)", {200: list_of(r.WebhookEndpointSchema)},
       paginated=True, tag="webhooks", errors={503: WEBHOOKS_DOWN}),
    Op("GET", "/v1/webhooks/{webhook_id}", "One webhook", {200: r.WebhookEndpointSchema}, params=WEBHOOK,
       tag="webhooks", errors=WEBHOOK_ERRORS),
    Op("DELETE", "/v1/webhooks/{webhook_id}", "Delete a webhook (its delivery log stays)",
       {204: Answer(None, "deleted")}, params=WEBHOOK, tag="webhooks", errors=WEBHOOK_ERRORS),
    Op("GET", "/v1/webhooks/{webhook_id}/deliveries", "A webhook's deliveries, newest first",
       {200: list_of(r.WebhookDeliverySchema)}, params=WEBHOOK, paginated=True, tag="webhooks",
       errors=WEBHOOK_ERRORS),
    Op("GET", "/health", "Broker, database and every service", public=True, tag="system",
       answers={200: Answer(r.HealthSchema, "all well"),
                503: Answer(r.HealthSchema, "degraded: `reasons` says why")}),
    Op("GET", "/openapi.json", "This document", {200: Answer({"type": "object"}, "OpenAPI 3.1")}, public=True,
       tag="system"),
    Op("GET", "/docs", "This document, browsable (Swagger UI)",
       {200: Answer(None, "an HTML page", content_types=("text/html",))}, public=True, tag="system"),
    Op("GET", "/docs/{asset}", "The browsable document's files",
       {200: Answer(None, "a file of Swagger UI", content_types=tuple(dict.fromkeys(openapi.ASSETS.values())))},
       public=True, params=DOCS_ASSET, errors={404: ("not_found",)}, tag="system"),
)


def serve(path: str, asset: str | None, server_url: str) -> Response:
    """``GET /openapi.json`` (the document of ``ROUTES``), ``GET /docs`` and its files."""
    if path == "/openapi.json":
        return openapi.document_response(ROUTES, server_url)
    return openapi.docs_page(asset)
