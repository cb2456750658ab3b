"""What the gateway's HTTP routes answer, as marshmallow schemas: the API contract (``api_docs``) is built from them.

The route modules build their answers as plain dicts; these schemas describe those dicts for the OpenAPI document
and are not used at run time. ``schemathesis`` checks every answer against them (tests/e2e/test_api_contract_e2e.py),
so a field a route adds, drops or retypes fails there until the schema here says so. Objects are closed
(``unknown = RAISE``, OpenAPI ``additionalProperties: false``) except where a route passes on another service's
free-form data (``fields.Dict``).
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.contracts import FAILURE, IN_PROGRESS, QUEUED, STARTED, SUCCESS, WAITING
from shared.models.events import EVENT_ROLES

STATES = (WAITING, SUCCESS, FAILURE)
PHASES = (QUEUED, STARTED, IN_PROGRESS)


def _time(**kwargs: object) -> fields.String:
    """A UTC time as the API writes it (ISO 8601)."""
    return fields.String(metadata={"description": "UTC, ISO 8601", "format": "date-time", **kwargs.pop("metadata", {})},
                         **kwargs)


def _nullable(field: type[fields.Field], **kwargs: object) -> fields.Field:
    return field(required=True, allow_none=True, **kwargs)


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"description": "stable, machine-readable"})
    message = fields.String(required=True, metadata={"description": "for people"})


class ErrorSchema(Schema):
    """Every 4xx and 5xx: ``{"error": {"code", "message"}}``."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class TokenSchema(Schema):
    access_token = fields.String(required=True, metadata={"description": "JWT; send as 'Authorization: Bearer <t>'"})


class EventSummarySchema(Schema):
    id = fields.Integer(required=True)
    identifier = _nullable(fields.String)
    name = _nullable(fields.String)
    start_time = _nullable(fields.String, metadata={"description": "local time of the event, no offset"})
    end_time = _nullable(fields.String, metadata={"description": "local time of the event, no offset"})
    timezone = _nullable(fields.String)


class EventDetailSchema(EventSummarySchema):
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "records of each kind (sessions, speakers, tracks...)"})


class PublicationAnswerSchema(Schema):
    id = fields.Integer(required=True)
    published = fields.Boolean(required=True)
    feeds = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                        metadata={"description": "feed extension -> its public URL; empty when withdrawn"})


class FormatSchema(Schema):
    identifier = fields.String(required=True)
    extension = fields.String(required=True)
    content_type = fields.String(required=True)
    description = fields.String(required=True)


class ProgressSchema(Schema):
    stage = fields.String(required=True)
    done = fields.Integer(required=True)
    total = fields.Integer(required=True, allow_none=True)
    phase = fields.String(allow_none=True, metadata={"description": "imports only"})


class TaskSchema(Schema):
    """``GET /v1/tasks/{id}`` (README, "Task contract")."""

    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("export", "import")))
    event_id = _nullable(fields.Integer)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    status = fields.String(required=True, validate=validate.OneOf(PHASES))
    created_at = _time(required=True)
    updated_at = _time(required=True)
    progress = fields.Nested(ProgressSchema, metadata={"description": "while WAITING in status progress"})
    result = fields.Dict(allow_none=True, metadata={
        "description": "once SUCCESS or FAILURE: the export's download_url, size, sha256, expires_at, key, warnings, "
                       "retention (or deleted_at/expired_at once the archive is gone), the import's event; "
                       "on FAILURE {code, message} (imports add file, record_id, field, errors, errors_total)"})


class TaskListItemSchema(TaskSchema):
    """One line of ``GET /v1/tasks``: the task as ``GET /v1/tasks/{id}`` answers it, and where that is."""

    task_url = fields.String(required=True)


class MeSchema(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    is_admin = fields.Boolean(required=True)


class RoleSchema(Schema):
    user_id = fields.Integer(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(EVENT_ROLES))
    created_at = _time()


class TaskAcceptedSchema(Schema):
    task_url = fields.String(required=True, metadata={"description": "poll it: GET answers the task"})


class RetentionSchema(Schema):
    backend = fields.String(required=True)
    delete_at = _time(required=True, allow_none=True)


class ExportEntrySchema(Schema):
    """One line of ``GET /v1/events/{id}/exports``."""

    task_id = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    status = fields.String(required=True, validate=validate.OneOf(PHASES))
    created_at = _time(required=True)
    requested_by = _nullable(fields.String, metadata={"description": "the requester's email"})
    options = _nullable(fields.Dict, keys=fields.String(), values=fields.Boolean())
    format = fields.String(required=True)
    progress = fields.Nested(ProgressSchema)
    size = fields.Integer(allow_none=True)
    sha256 = fields.String(allow_none=True)
    retention = fields.Nested(RetentionSchema, allow_none=True)
    download = fields.String(metadata={"description": "the download path, while the archive exists"})
    deleted_at = _time()
    expired_at = _time()


class ImportJobSchema(Schema):
    """One line of ``GET /v1/import-jobs``."""

    task_id = fields.String(required=True)
    task_url = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    status = fields.String(required=True, validate=validate.OneOf(PHASES))
    filename = _nullable(fields.String)
    size = _nullable(fields.Integer)
    created_at = _time(required=True)
    updated_at = _time(required=True)
    event_id = _nullable(fields.Integer, metadata={"description": "the new event, once SUCCESS"})
    result = _nullable(fields.Dict, metadata={"description": "as the task's result"})
    progress = fields.Nested(ProgressSchema)


class UploadAnswerSchema(Schema):
    url = fields.Raw(required=True, metadata={
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        "description": "the file's public /media/ URL; a list (body order) when sent as files[]"})


class BackendChoiceSchema(Schema):
    storage_backend_id = fields.String(required=True)
    storage_backend = fields.String(required=True)
    description = _nullable(fields.String)
    keep_days = fields.Integer(required=True)
    default = fields.Boolean(required=True)


class BackendRecordSchema(Schema):
    """A storage backend record as storage shows it: secrets only as ``token_set``/``secrets_set``. The built-in
    ``default`` and ``local`` answer ``builtin: true`` and no config."""

    storage_backend = fields.String(required=True)
    storage_backend_id = fields.String(required=True)
    config = fields.Dict(metadata={"description": "non-secret settings"})
    token_set = fields.Boolean()
    secrets_set = fields.List(fields.String())
    keep_days = fields.Integer(required=True)
    description = fields.String(allow_none=True)
    active = fields.Boolean(required=True)
    created_at = _time()
    updated_at = _time()
    objects = fields.Integer(metadata={"description": "objects stored there, not deleted"})
    builtin = fields.Boolean()


class DefaultBackendSchema(Schema):
    storage_backend = fields.String(required=True)
    keep_days = fields.Integer(required=True)




class MailDeliverySchema(Schema):
    id = fields.Integer(required=True)
    task_id = _nullable(fields.String)
    kind = fields.String(required=True)
    event_id = _nullable(fields.Integer)
    recipient = fields.String(required=True)
    subject = _nullable(fields.String)
    state = fields.String(required=True)
    attempts = fields.Integer(required=True)
    last_error = _nullable(fields.String, metadata={"description": "the mail server's reply"})
    message_id = _nullable(fields.String)
    created_at = _time(required=True, allow_none=True)
    updated_at = _time(required=True, allow_none=True)
    sent_at = _time(required=True, allow_none=True)
    next_attempt_at = _time(required=True, allow_none=True)
    next_retry_at = _time(required=True, allow_none=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("ok", "degraded")))
    reasons = fields.List(fields.String(), metadata={"description": "when degraded: one line per problem"})
    broker = fields.Dict(required=True)
    database = fields.Dict(required=True)
    services = fields.Dict(keys=fields.String(), values=fields.Dict(), required=True)


class WebhookEndpointSchema(Schema):
    """A registered webhook (``secret`` only in the answer that created it)."""

    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    event_id = _nullable(fields.Integer, metadata={"description": "null: every event (admins only)"})
    description = _nullable(fields.String)
    active = fields.Boolean(required=True)
    created_at = _time(required=True)


class WebhookCreatedSchema(WebhookEndpointSchema):
    secret = fields.String(required=True, metadata={"description": "whsec_ + base64: shown only here"})


class WebhookDeliverySchema(Schema):
    id = fields.String(required=True, metadata={"description": "the webhook-id header the receiver saw"})
    event_type = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(("pending", "delivered", "failed")))
    attempts = fields.Integer(required=True)
    last_status = _nullable(fields.Integer, metadata={"description": "the receiver's HTTP status"})
    last_error = _nullable(fields.String)
    next_retry_at = _time(required=True, allow_none=True)
    delivered_at = _time(required=True, allow_none=True)
    created_at = _time(required=True)
