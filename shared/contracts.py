"""Versioned event contracts between services (documented in docs/events.md).

Every payload is plain JSON (no kombu ``__type__`` markers: other languages subscribe too) and carries
``schema_version``, ``task_id``, ``event_id``, ``requested_by`` and a UTC ``occurred_at``. Producers validate with
``make_payload`` before publishing, so a producer bug fails loudly at the source instead of in every consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

SCHEMA_VERSION = 1

# What a service publishes its events through: (event type, payload).
Publish = Callable[[str, dict[str, Any]], None]

# Source service names, as nameko routes on them (the exchange is "<service>.events").
GATEWAY = "api_gateway"
EXPORTER = "exporter"
IMPORTER = "importer"
MAILER = "mailer"
STORAGE = "storage"
WEBHOOKS = "webhooks"

EXPORT_REQUESTED = "export_requested"
EXPORT_STARTED = "export_started"
EXPORT_PROGRESS = "export_progress"
EXPORT_COMPLETED = "export_completed"
EXPORT_FAILED = "export_failed"

IMPORT_REQUESTED = "import_requested"
IMPORT_STARTED = "import_started"
IMPORT_PROGRESS = "import_progress"
IMPORT_COMPLETED = "import_completed"
IMPORT_FAILED = "import_failed"

MAIL_SENT = "mail_sent"
MAIL_FAILED = "mail_failed"

OBJECT_STORED = "object_stored"
OBJECT_EXPIRED = "object_expired"

# The events webhooks announce, under their public names (docs/webhooks.md); the AMQP payload is the body's data.
WEBHOOK_EVENTS = {
    EXPORT_COMPLETED: "export.completed",
    EXPORT_FAILED: "export.failed",
    IMPORT_COMPLETED: "import.completed",
    IMPORT_FAILED: "import.failed",
    OBJECT_EXPIRED: "object.expired",
}

# Task states seen by HTTP clients, as the Open Event Server's contract has them (its frontend polls while WAITING
# and takes anything else but SUCCESS for a failure); a terminal state never changes again.
WAITING, SUCCESS, FAILURE = "WAITING", "SUCCESS", "FAILURE"
TERMINAL_STATES = (SUCCESS, FAILURE)
# The finer phase of a task, a separate field: queued (in the worker's queue), started (taken), progress (reporting
# ``progress``). It only moves forward, in this order.
QUEUED, STARTED, IN_PROGRESS = "queued", "started", "progress"
STATUSES = (QUEUED, STARTED, IN_PROGRESS)

MEDIA_FLAGS: tuple[str, ...] = ("image", "video", "document", "audio")  # export options; the archive's media kinds


def handler_queue(source_service: str, event_type: str, service_name: str, method_name: str) -> str:
    """The durable queue nameko declares for an ``@event_handler`` (SERVICE_POOL, reliable delivery).

    The gateway declares request queues itself before accepting requests, so a request made while a worker has
    never run is kept, not dropped (docs/architecture.md fact 2).
    """
    return f"evt-{source_service}-{event_type}--{service_name}.{method_name}"


EXPORT_REQUEST_QUEUE = handler_queue(GATEWAY, EXPORT_REQUESTED, EXPORTER, "handle_export_requested")
IMPORT_REQUEST_QUEUE = handler_queue(GATEWAY, IMPORT_REQUESTED, IMPORTER, "handle_import_requested")


class RequesterSchema(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)


class EnvelopeSchema(Schema):
    schema_version = fields.Integer(required=True, validate=validate.Equal(SCHEMA_VERSION))
    task_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    event_id = fields.Integer(required=True, allow_none=True)
    requested_by = fields.Nested(RequesterSchema, required=True)
    occurred_at = fields.String(required=True)


class ExportOptionsSchema(Schema):
    image = fields.Boolean(load_default=False)
    video = fields.Boolean(load_default=False)
    document = fields.Boolean(load_default=False)
    audio = fields.Boolean(load_default=False)


def _registered_format(identifier: str) -> None:
    from shared.archive.formats import FORMATS  # imported late: the writer behind the registry imports this module

    if identifier not in FORMATS:
        raise ValidationError(f"Unknown export format {identifier!r}; known formats: {', '.join(FORMATS)}.")


class ExportRequestedSchema(EnvelopeSchema):
    options = fields.Nested(ExportOptionsSchema, required=True)
    # Added within schema version 1: a format of shared/archive/formats.py; absent: the Open Event zip ("json").
    format = fields.String(load_default="json", validate=_registered_format)
    # The storage backend record (its storage_backend_id) to store the archive in; absent or null: the default.
    storage = fields.String(allow_none=True, load_default=None, validate=validate.Length(min=1, max=64))


class ExportStartedSchema(EnvelopeSchema):
    pass


class ExportProgressSchema(EnvelopeSchema):
    stage = fields.String(required=True)
    done = fields.Integer(required=True)
    total = fields.Integer(required=True, allow_none=True)


class WarningSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    file = fields.String(allow_none=True)
    record_id = fields.Raw(allow_none=True)
    field = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    # relation_conflict: the id the archive gave and the record linked instead (or the same id, when kept)
    given = fields.Raw(allow_none=True)
    chosen = fields.Raw(allow_none=True)


class RetentionSchema(Schema):
    """Where an archive is kept and until when: apart from its signed link's ``expires_at``."""

    backend = fields.String(required=True)  # the backend record's storage_backend_id; "default" for the default
    delete_at = fields.String(required=True, allow_none=True)  # UTC ISO-8601; null: kept until deleted on request


class ExportCompletedSchema(EnvelopeSchema):
    key = fields.String(required=True)
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True, validate=validate.Length(equal=64))
    download_url = fields.String(required=True)
    expires_at = fields.String(required=True)
    warnings = fields.List(fields.Nested(WarningSchema), required=True)
    warnings_total = fields.Integer(required=True)
    # Added within schema version 1: the exporter always sends it; consumers of older events get None.
    retention = fields.Nested(RetentionSchema, load_default=None)
    # Added within schema version 1: the request's export format; consumers of older events get None ("json").
    format = fields.String(load_default=None)


class ExportFailedSchema(EnvelopeSchema):
    code = fields.String(required=True)
    message = fields.String(required=True)


def _import_format(identifier: str) -> None:
    from shared.schedule.readers import IMPORT_FORMATS  # imported late, like the export registry

    if identifier not in IMPORT_FORMATS:
        raise ValidationError(f"Unknown import format {identifier!r}; known formats: {', '.join(IMPORT_FORMATS)}.")


class ImportRequestedSchema(EnvelopeSchema):
    key = fields.String(required=True)  # storage object key of the uploaded archive
    filename = fields.String(required=True)  # as uploaded, for messages only
    size = fields.Integer(required=True)
    # ?strict=true: no repairs, skipped records or ignored files in hand-made archives; each is a problem instead
    strict = fields.Boolean(load_default=False)
    # Added within schema version 1: the format the file was posted as (POST /v1/events/import/<format>); absent:
    # "json", the Open Event zip. The importer decides by the content; this only breaks ties.
    format = fields.String(load_default="json", validate=_import_format)


class ImportStartedSchema(EnvelopeSchema):
    pass


class ImportProgressSchema(ExportProgressSchema):
    # download | index | validate | media | database; ``stage`` is then the archive file where one applies
    phase = fields.String(load_default=None)


class ImportCompletedSchema(EnvelopeSchema):
    id = fields.Integer(required=True)  # the new event's id
    event_name = fields.String(required=True)
    url = fields.String(required=True)  # the event in the API: <gateway>/v1/events/<id>
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    warnings = fields.List(fields.Nested(WarningSchema), required=True)
    warnings_total = fields.Integer(required=True)


class ProblemSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    file = fields.String(allow_none=True, load_default=None)
    record_id = fields.Raw(allow_none=True, load_default=None)
    field = fields.String(allow_none=True, load_default=None)


class ImportFailedSchema(EnvelopeSchema):
    # The first problem at the top level (as before), then every problem found: at most 100 listed, all counted.
    code = fields.String(required=True)
    message = fields.String(required=True)
    file = fields.String(allow_none=True, load_default=None)
    record_id = fields.Raw(allow_none=True, load_default=None)
    field = fields.String(allow_none=True, load_default=None)
    errors = fields.List(fields.Nested(ProblemSchema), load_default=None)
    errors_total = fields.Integer(load_default=None)
    filename = fields.String(allow_none=True, load_default=None)  # the uploaded file, as in import_requested


class MailSentSchema(EnvelopeSchema):
    kind = fields.String(required=True)  # the event that caused the mail, e.g. "export_completed"
    recipient = fields.String(required=True)
    subject = fields.String(required=True)
    message_id = fields.String(required=True)


class MailFailedSchema(EnvelopeSchema):
    kind = fields.String(required=True)
    recipient = fields.String(required=True)
    reason = fields.String(required=True)
    attempts = fields.Integer(required=True)


class StorageEnvelopeSchema(Schema):
    """Storage events describe objects, not jobs: the task, event and requester are known only for some keys."""

    schema_version = fields.Integer(required=True, validate=validate.Equal(SCHEMA_VERSION))
    task_id = fields.String(required=True, allow_none=True)  # from the key's layout: exports/event<E>/<task>/...
    event_id = fields.Integer(required=True, allow_none=True)
    requested_by = fields.Nested(RequesterSchema, required=True, allow_none=True)  # storage does not know: null
    occurred_at = fields.String(required=True)
    key = fields.String(required=True)
    backend = fields.String(required=True)  # storage_backend_id of the record, or "default"
    backend_kind = fields.String(required=True)  # local | s3 | gcs | dropbox | seafile
    size = fields.Integer(required=True)
    sha256 = fields.String(required=True, validate=validate.Length(equal=64))
    expires_at = fields.String(required=True, allow_none=True)  # null: kept until deleted on request


class ObjectStoredSchema(StorageEnvelopeSchema):
    content_type = fields.String(required=True)
    created_at = fields.String(required=True)


class ObjectExpiredSchema(StorageEnvelopeSchema):
    reason = fields.String(required=True, validate=validate.OneOf(("expired", "deleted")))
    deleted_at = fields.String(required=True)


SCHEMAS: dict[str, type[Schema]] = {
    EXPORT_REQUESTED: ExportRequestedSchema,
    EXPORT_STARTED: ExportStartedSchema,
    EXPORT_PROGRESS: ExportProgressSchema,
    EXPORT_COMPLETED: ExportCompletedSchema,
    EXPORT_FAILED: ExportFailedSchema,
    IMPORT_REQUESTED: ImportRequestedSchema,
    IMPORT_STARTED: ImportStartedSchema,
    IMPORT_PROGRESS: ImportProgressSchema,
    IMPORT_COMPLETED: ImportCompletedSchema,
    IMPORT_FAILED: ImportFailedSchema,
    MAIL_SENT: MailSentSchema,
    MAIL_FAILED: MailFailedSchema,
    OBJECT_STORED: ObjectStoredSchema,
    OBJECT_EXPIRED: ObjectExpiredSchema,
}


MAX_WARNINGS = 200  # listed in a job's result; the rest are counted (a result must fit a task row and an event)
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # every timestamp in events, task results and API answers: UTC, to the second


def utc_iso(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime(UTC_FORMAT)


def parse_utc_iso(text: str) -> datetime:
    """The aware datetime of a ``utc_iso`` text."""
    return datetime.strptime(text, UTC_FORMAT).replace(tzinfo=UTC)


def make_payload(event_type: str, *, task_id: str, event_id: int | None, requested_by: dict[str, Any],
                 **fields_: Any) -> dict[str, Any]:
    """Build and validate a payload for ``event_type``; raises ValidationError on a contract breach."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "task_id": task_id,
        "event_id": event_id,
        "requested_by": {"id": requested_by["id"], "email": requested_by["email"]},
        "occurred_at": utc_iso(),
        **fields_,
    }
    errors = SCHEMAS[event_type]().validate(payload)
    if errors:
        raise ValidationError(errors)
    return payload


def make_storage_payload(event_type: str, *, task_id: str | None = None, event_id: int | None = None,
                         requested_by: dict[str, Any] | None = None, **fields_: Any) -> dict[str, Any]:
    """``make_payload`` for the storage events, whose task, event and requester may be unknown (null)."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "task_id": task_id,
        "event_id": event_id,
        "requested_by": None if requested_by is None else {"id": requested_by["id"], "email": requested_by["email"]},
        "occurred_at": utc_iso(),
        **fields_,
    }
    errors = SCHEMAS[event_type]().validate(payload)
    if errors:
        raise ValidationError(errors)
    return payload


def load_payload(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Validate an incoming payload; unknown keys are ignored so producers can add fields compatibly."""
    from marshmallow import EXCLUDE

    return SCHEMAS[event_type](unknown=EXCLUDE).load(payload)
