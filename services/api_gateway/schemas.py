"""What the gateway's HTTP routes accept: one marshmallow schema per body or query string, and ``parse``.

A refusal is one ``ApiError`` (400): the schema's ``error_code`` and the first problem, worded for the client.
Checks whose order the API documents (the body's type, then ``storage``, then unknown options) run in ``pre_load``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, pre_load, validate

from shared.contracts import MEDIA_FLAGS, TERMINAL_STATES, WAITING, WEBHOOK_EVENTS
from shared.http import MAX_DB_INT, ApiError
from shared.models.events import EVENT_ROLES
from shared.webhook_signature import InvalidSecret, secret_key

TASK_KINDS = ("export", "import")
EMPTY_IS_ABSENT = {"allowEmptyValue": True}  # the API contract (openapi.py): ``?name=`` is no filter


class StrictBoolean(fields.Field):
    """JSON ``true`` or ``false`` only (marshmallow's Boolean also takes ``"yes"``, ``1``...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"Option '{attr}' must be true or false, not {json.dumps(value)}.")
        return value


class QueryFlag(fields.Field):
    """A boolean query parameter: exactly ``true`` or ``false``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value == "true":
            return True
        if value == "false":
            return False
        raise ValidationError(f"{attr} must be true or false, not '{(value or '')[:50]}'.")


class RequestSchema(Schema):
    error_code: ClassVar[str] = "invalid_request"
    # One wording for every problem (login answers the same whatever is wrong); None: the problem's own message.
    error_message: ClassVar[str | None] = None


def _first_message(messages: Any) -> str:
    while isinstance(messages, (dict, list)):
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    return str(messages)


def parse(schema: RequestSchema, data: Any) -> dict[str, Any]:
    """``schema.load(data)``, or 400 naming the first problem."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ApiError(400, schema.error_code, schema.error_message or _first_message(exc.messages)) from None


class LoginSchema(RequestSchema):
    """``POST /v1/auth/login``."""

    class Meta:
        unknown = EXCLUDE

    error_message = "Send {\"email\": ..., \"password\": ...} as JSON."
    email = fields.String(required=True)
    password = fields.String(required=True)


class PublicationSchema(RequestSchema):
    """``PUT /v1/events/{id}/publication``: ``{"published": true|false}``."""

    class Meta:
        unknown = EXCLUDE

    error_message = "Send {\"published\": true} or {\"published\": false} as JSON."
    # JSON booleans only (a Boolean with truthy={True} also took 1 and 0.0: they compare equal to True and False)
    published = StrictBoolean(required=True)


class ExportRequestSchema(RequestSchema):
    """``POST /v1/events/{id}/export/json``: the media flags and the storage backend record (``storage``)."""

    class Meta:
        unknown = RAISE

    image = StrictBoolean(load_default=False)
    video = StrictBoolean(load_default=False)
    document = StrictBoolean(load_default=False)
    audio = StrictBoolean(load_default=False)
    storage = fields.Raw(load_default=None, metadata={"type": "string", "minLength": 1,
                                                      "description": "a storage_backend_id (GET /v1/storage-backends)"})

    @pre_load
    def _check(self, data: Any, **kwargs: Any) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.")
        storage = data.get("storage")
        if storage is not None and (not isinstance(storage, str) or not storage):
            raise ValidationError("Option 'storage' must be the storage_backend_id of a backend.")
        unknown = sorted(set(data) - {*MEDIA_FLAGS, "storage"})
        if unknown:
            raise ValidationError(
                f"Unknown option(s) {', '.join(unknown)}; allowed: {', '.join((*MEDIA_FLAGS, 'storage'))}.")
        return data


def export_request(body: Any) -> tuple[dict[str, bool], str | None]:
    """The media options and the ``storage_backend_id`` named in ``storage`` (``None``: the default backend)."""
    loaded = parse(ExportRequestSchema(), body)
    return {flag: loaded[flag] for flag in MEDIA_FLAGS}, loaded["storage"]


class TaskListQuerySchema(RequestSchema):
    """``GET /v1/tasks?kind=&state=&event_id=`` (``limit`` and ``cursor`` are the pagination's)."""

    class Meta:
        unknown = EXCLUDE

    error_code = "invalid_parameter"
    kind = fields.String(load_default=None, validate=validate.OneOf(TASK_KINDS, error="kind must be one of {choices}."),
                         metadata=EMPTY_IS_ABSENT)
    state = fields.String(load_default=None, validate=validate.OneOf(
        (WAITING, *TERMINAL_STATES), error="state must be one of {choices}."), metadata=EMPTY_IS_ABSENT)
    event_id = fields.Raw(load_default=None, metadata={**EMPTY_IS_ABSENT, "type": "integer", "minimum": 1,
                                                       "maximum": MAX_DB_INT})

    @pre_load
    def _check(self, data: Any, **kwargs: Any) -> dict[str, Any]:
        loaded = {name: data[name] for name in ("kind", "state", "event_id") if data.get(name) not in (None, "")}
        raw = loaded.get("event_id")
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_DB_INT:
                raise ValidationError(f"event_id must be an event's id (a whole number), not {raw[:30]!r}.")
            loaded["event_id"] = int(raw)
        return loaded


class RoleGrantSchema(RequestSchema):
    """``POST /v1/events/{id}/roles``: ``{"email": ..., "role": "organizer" | "coorganizer"}``."""

    class Meta:
        unknown = RAISE

    email = fields.String(required=True, validate=validate.Length(min=1, max=255))
    role = fields.String(required=True, validate=validate.OneOf(EVENT_ROLES, error="role must be one of {choices}."))

    @pre_load
    def _check(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError('Send {"email": ..., "role": "organizer" or "coorganizer"} as a JSON object.')
        return data


class RoleQuerySchema(RequestSchema):
    """``DELETE /v1/events/{id}/roles/{user_id}?role=``: absent, every role of the user in the event."""

    class Meta:
        unknown = EXCLUDE

    error_code = "invalid_parameter"
    role = fields.String(load_default=None, validate=validate.OneOf(EVENT_ROLES, error="role must be one of "
                                                                                       "{choices}."))


class ImportQuerySchema(RequestSchema):
    """``POST /v1/events/import/json?strict=``: absent or ``false``: hand-made archives are repaired where they can."""

    class Meta:
        unknown = EXCLUDE

    error_code = "invalid_parameter"
    strict = QueryFlag(load_default=False)


class UploadQuerySchema(RequestSchema):
    """``POST /v1/upload/...?force_local=``: ``true`` asks storage for its local backend instead of the default."""

    class Meta:
        unknown = EXCLUDE

    error_code = "invalid_parameter"
    force_local = QueryFlag(load_default=False)


class StrictInteger(fields.Integer):
    """A JSON integer (not ``"5"``, not ``true``, not ``5.0``), within the range of a database id."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**63 - 1:
            raise ValidationError(f"'{attr}' must be a positive integer or null.")
        return value


class WebhookSchema(RequestSchema):
    """``POST /v1/webhooks``: ``{"url", "events", "event_id", "secret"?, "description"?}`` (docs/webhooks.md)."""

    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    events = fields.List(fields.String(validate=validate.OneOf(sorted(WEBHOOK_EVENTS.values()))), required=True,
                         validate=validate.Length(min=1, error="'events' must name at least one event."))
    event_id = StrictInteger(load_default=None, allow_none=True)  # null or absent: every event (admins only)
    secret = fields.String(load_default=None, allow_none=True)
    description = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @pre_load
    def _check(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError("The request body must be a JSON object.")
        secret = data.get("secret")
        if secret is not None:
            try:
                secret_key(secret)
            except InvalidSecret as exc:
                raise ValidationError(f"'secret': {exc}.") from None
        return data


class BackendCreateSchema(Schema):
    """``POST /v1/admin/storage-backends``: documented here, checked by storage (which owns the records)."""

    class Meta:
        unknown = RAISE

    storage_backend = fields.String(required=True, metadata={"description": "local, s3, gcs, dropbox or seafile"})
    storage_backend_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
                                       metadata={"description": "not `default` or `local` (reserved)"})
    token = fields.Raw(allow_none=True, metadata={"type": ["string", "object"],
                                                  "description": "write-only: answers say token_set"})
    config = fields.Dict(allow_none=True, metadata={"description": "the kind's settings; secrets are write-only"})
    keep_days = fields.Integer(validate=validate.Range(0, 36500), metadata={"description": "0: keep"})
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    active = fields.Boolean()


class BackendUpdateSchema(BackendCreateSchema):
    """``PATCH /v1/admin/storage-backends/{id}``: ``config`` is merged (``null`` removes a key; secrets not sent
    are kept); ``token: null`` clears the token."""

    class Meta:
        unknown = RAISE
        exclude = ("storage_backend", "storage_backend_id")
