"""What each kind of backend accepts as configuration, checked before anything is stored or built.

Pure functions, no I/O beyond checking that a named file exists. Used for backend records (admin API) and for the
default backend configured by environment (``settings.py``). Error messages name the field and what is wrong with it
but never repeat the value of a secret.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.object_keys import is_key_prefix
from shared.secretbox import is_secret_name

KINDS = ("local", "s3", "gcs", "dropbox", "seafile")
DEFAULT_ID = "default"  # the backend configured by environment; reserved, no record may take it
LOCAL_ID = "local"  # the filesystem under STORAGE_DIR, whatever the default is (the upload API's force_local)
RESERVED_IDS = (DEFAULT_ID, LOCAL_ID)
MiB = 1024 * 1024
_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_FOLDER_RE = re.compile(r"(/[A-Za-z0-9._~ -]+)+")
MAX_STRING = 2048


class InvalidBackendConfig(ValueError):
    """The backend record or its config is not acceptable; the message says which field and why."""


@dataclass(frozen=True)
class Field:
    type: str  # str | url | host | int | bool | prefix | folder | path | choice | credentials
    required: bool = False  # for records (the environment may leave credentials to the SDK's own chain)
    secret: bool = False
    env_only: bool = False  # only for the default backend (paths chosen by the operator, not through the API)
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    multiple_of: int | None = None


FIELDS: dict[str, dict[str, Field]] = {
    "local": {},
    "s3": {
        "bucket": Field("str", required=True),
        "endpoint_url": Field("url"),
        "public_endpoint_url": Field("url"),
        "region": Field("str"),
        "access_key_id": Field("str", required=True),
        "secret_access_key": Field("str", required=True, secret=True),
        "prefix": Field("prefix"),
        "part_size": Field("int", minimum=5 * MiB, maximum=5 * 1024 * MiB),
        "addressing_style": Field("choice", choices=("path", "virtual", "auto")),
    },
    "gcs": {
        "bucket": Field("str", required=True),
        "project": Field("str"),
        "credentials": Field("credentials", secret=True),  # service-account key (JSON); required unless anonymous
        "credentials_file": Field("path", env_only=True),
        "signing_credentials_file": Field("path", env_only=True),
        "anonymous": Field("bool"),  # emulators; with credentials, they only sign URLs
        "api_endpoint": Field("url"),
        "public_endpoint": Field("url"),
        "prefix": Field("prefix"),
        "chunk_size": Field("int", minimum=256 * 1024, maximum=1024 * MiB, multiple_of=256 * 1024),
    },
    "dropbox": {
        "app_key": Field("str", required=True),
        "app_secret": Field("str", required=True, secret=True),
        "refresh_token": Field("str", required=True, secret=True),
        "root": Field("folder"),
        "api_host": Field("host"),
        "content_host": Field("host"),
        "ca_certs": Field("path"),
    },
    "seafile": {
        "server_url": Field("url", required=True),
        "repo_id": Field("str", required=True),
        "token": Field("str", required=True, secret=True),
        "root": Field("folder"),
        "ca_certs": Field("path"),
    },
}

# The record's ``token`` is this config key of its kind (the one credential each kind cannot do without).
TOKEN_FIELD: dict[str, str] = {"s3": "secret_access_key", "gcs": "credentials", "dropbox": "refresh_token",
                               "seafile": "token"}


def is_secret(kind: str, name: str) -> bool:
    """Secret by declaration, or by a name that looks like one (never returned, never logged)."""
    declared = FIELDS.get(kind, {}).get(name)
    # The name rule is the one the database encryption uses (shared/secretbox.py): what is never returned is also
    # never stored in plain text.
    return (declared is not None and declared.secret) or is_secret_name(name)


def check_identifier(identifier: Any) -> str:
    if not isinstance(identifier, str) or not _IDENTIFIER_RE.fullmatch(identifier):
        raise InvalidBackendConfig(
            "storage_backend_id must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    if identifier.lower() in RESERVED_IDS:
        raise InvalidBackendConfig(
            f"storage_backend_id {identifier!r} is reserved ({DEFAULT_ID!r}: the configured default backend, "
            f"{LOCAL_ID!r}: the storage service's own filesystem)."
        )
    return identifier


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InvalidBackendConfig(f"storage_backend must be one of {', '.join(KINDS)}.")
    return kind


def _bool(name: str, value: Any, from_env: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_env and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise InvalidBackendConfig(f"config.{name} must be true or false.")


def _int(name: str, spec: Field, value: Any, from_env: bool) -> int:
    if from_env and isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidBackendConfig(f"config.{name} must be a whole number.")
    if spec.minimum is not None and value < spec.minimum:
        raise InvalidBackendConfig(f"config.{name} must be at least {spec.minimum}.")
    if spec.maximum is not None and value > spec.maximum:
        raise InvalidBackendConfig(f"config.{name} must be at most {spec.maximum}.")
    if spec.multiple_of and value % spec.multiple_of:
        raise InvalidBackendConfig(f"config.{name} must be a multiple of {spec.multiple_of}.")
    return value


def _credentials(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidBackendConfig(f"config.{name} must be a service-account key (JSON).") from None
    if not isinstance(value, dict) or value.get("type") != "service_account" \
            or not all(isinstance(value.get(k), str) and value[k] for k in ("private_key", "client_email")):
        raise InvalidBackendConfig(
            f"config.{name} must be a service-account key: a JSON object with type \"service_account\", "
            "private_key and client_email."
        )
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _string(name: str, spec: Field, value: Any) -> str:
    what = "a secret" if spec.secret else "a string"
    if not isinstance(value, str) or not value.strip():
        raise InvalidBackendConfig(f"config.{name} must be {what} (non-empty).")
    if len(value) > MAX_STRING or any(ord(ch) < 32 for ch in value):
        raise InvalidBackendConfig(f"config.{name} must be {what} of at most {MAX_STRING} printable characters.")
    return value


def _check(name: str, spec: Field, value: Any, from_env: bool) -> Any:
    if spec.type == "bool":
        return _bool(name, value, from_env)
    if spec.type == "int":
        return _int(name, spec, value, from_env)
    if spec.type == "credentials":
        return _credentials(name, value)
    value = _string(name, spec, value)
    if spec.type == "url":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise InvalidBackendConfig(f"config.{name} must be an http(s) URL such as https://host[:port].")
        return value.rstrip("/")
    if spec.type == "host":
        if not _HOST_RE.fullmatch(value):
            raise InvalidBackendConfig(f"config.{name} must be host[:port], without scheme or path.")
    elif spec.type == "prefix":
        value = value if value.endswith("/") else value + "/"
        if not is_key_prefix(value):
            raise InvalidBackendConfig(f"config.{name} must be path segments of letters, digits and . _ ~ -.")
    elif spec.type == "folder":
        value = "/" + value.strip("/")
        if not _FOLDER_RE.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
            raise InvalidBackendConfig(f"config.{name} must be a folder such as /portability (not the top level).")
    elif spec.type == "path":
        if not os.path.isabs(value) or not os.path.isfile(value):
            raise InvalidBackendConfig(f"config.{name} must be the absolute path of a file on the storage host.")
    elif spec.type == "choice" and value not in spec.choices:
        raise InvalidBackendConfig(f"config.{name} must be one of {', '.join(spec.choices)}.")
    return value


def normalize(kind: str, config: Any, token: Any, *, from_env: bool = False) -> tuple[dict[str, Any], str | None]:
    """Check ``config`` (and ``token``) for a backend of ``kind``; returns ``(config, token)`` as they are stored.

    The kind's credential may come as ``token`` or under its config key (``TOKEN_FIELD``), not both; it is returned as
    the token and removed from the config. ``null`` values mean "not set".
    """
    check_kind(kind)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidBackendConfig("config must be a JSON object.")
    fields = FIELDS[kind]
    unknown = sorted(k for k in config if k not in fields or (fields[k].env_only and not from_env))
    if unknown:
        allowed = sorted(k for k, f in fields.items() if from_env or not f.env_only)
        raise InvalidBackendConfig(
            f"Unknown config key(s) for a backend of kind {kind}: {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(allowed) or 'none'}."
        )
    token_field = TOKEN_FIELD.get(kind)
    config = {k: v for k, v in config.items() if v is not None}
    if token is not None:
        if token_field is None:
            raise InvalidBackendConfig(f"A backend of kind {kind} takes no token.")
        if token_field in config:
            raise InvalidBackendConfig(f"Give the {token_field} either as token or in config, not both.")
        config[token_field] = token
    clean = {name: _check(name, fields[name], value, from_env) for name, value in config.items()}
    if not from_env:
        required = [n for n, f in fields.items() if f.required and n not in clean]
        if kind == "gcs" and "credentials" not in clean and not clean.get("anonymous"):
            required.append("credentials")
        if required:
            names = [("token" if n == token_field else f"config.{n}") for n in required]
            raise InvalidBackendConfig(f"A backend of kind {kind} needs {', '.join(names)}.")
    else:
        if kind == "s3" and ("access_key_id" in clean) != ("secret_access_key" in clean):
            raise InvalidBackendConfig("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together (or neither: then "
                                       "the SDK's own chain, e.g. AWS_ACCESS_KEY_ID, applies).")
        missing = [n for n, f in fields.items() if f.required and n not in clean
                   and not (kind == "s3" and n in ("access_key_id", "secret_access_key"))
                   and not (kind == "gcs" and n == "credentials")]
        if missing:
            raise InvalidBackendConfig(f"missing {', '.join(f'{kind.upper()}_{n.upper()}' for n in missing)}")
    return clean, (clean.pop(token_field, None) if token_field else None)


def public_config(kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config without its secrets, and the names of the secrets that are set."""
    shown = {k: v for k, v in config.items() if not is_secret(kind, k)}
    hidden = sorted(k for k in config if is_secret(kind, k))
    return shown, hidden
