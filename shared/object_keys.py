"""Every storage object key of the platform, built and parsed here, and the public ``/media/`` address of the
public ones.

Layout (keys are portable to S3 and friends: letters, digits and ``._~-`` in non-empty segments):

- ``exports/event<event id>/<task id>/event<event id><extension>``: an export's file (``export_key``), named with
  its format's extension (``.zip`` for the Open Event archive);
- ``imports/<task id>/<safe file name>``: an uploaded archive waiting for its import (``import_key``);
- ``imports/<task id>/media/<member path>``: a media file an import re-hosted (``import_media_key``);
- ``uploads/<user id>/<uuid>/<name>``: a file of the upload API (``upload_key``).

Two kinds are public, served without credentials by the gateway at ``<GATEWAY_URL>/media/<key>``: re-hosted import
media and uploads. The gateway serves exactly these keys (anything else is a 404), and the exporter recognises these
addresses in event data so that it reads the platform's own media from storage by key instead of fetching a
loopback URL; both decide with ``is_public_key`` / ``key_of_url``. Storage names the task (and event) of an export's
or import's object in its events with ``key_context``.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote, urlsplit

MAX_KEY_LENGTH = 512
_SEGMENT = r"[A-Za-z0-9._~-]+"
_KEY = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
_PREFIX = re.compile(rf"({_SEGMENT}/)*")
_SEGMENT_DROP = re.compile(r"[^A-Za-z0-9._~-]+")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_IMPORT_MEDIA_KEY = re.compile(rf"imports/[0-9a-f-]{{36}}/media/{_SEGMENT}(/{_SEGMENT})*")
_UPLOAD_KEY = re.compile(rf"uploads/[0-9]+/{_UUID}/[A-Za-z0-9][A-Za-z0-9._-]*")
# Keys whose layout names their task (and event): storage events carry them for subscribers.
_EXPORT_PREFIX = re.compile(r"exports/event([0-9]{1,18})/([A-Za-z0-9-]{1,64})/")
_IMPORT_PREFIX = re.compile(r"imports/([A-Za-z0-9-]{1,64})/")
_FILE_NAME_DROP = re.compile(r"[^A-Za-z0-9_-]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")
ARCHIVE_EXTENSION = ".zip"  # the default format's (the Open Event archive)
MAX_FILENAME = 100
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- any key ---------------------------------------------------------------------------------------------------------

def key_problem(key: object) -> str | None:
    """Why ``key`` is not a safe relative object key (a sentence for ``InvalidKey``), or ``None`` if it is one."""
    if not isinstance(key, str) or not key:
        return "object key must be a non-empty string"
    if len(key) > MAX_KEY_LENGTH:
        return f"object key longer than {MAX_KEY_LENGTH} characters"
    if "\x00" in key or "\\" in key:
        return "object key must not contain NUL or backslash"
    if key.startswith("/"):
        return "object key must be relative"
    if ".." in key:
        return "object key must not contain '..'"
    if not _KEY.fullmatch(key):
        return "object key may only use letters, digits and . _ ~ - in non-empty segments separated by single '/'"
    if any(segment == "." for segment in key.split("/")):
        return "object key must not contain '.' segments"
    return None


def is_key_prefix(prefix: str) -> bool:
    """Whether ``prefix`` (ending in ``/``) can stand before every key: whole segments of key characters, no ``.``
    or ``..`` segment (a backend's ``prefix`` config: S3, GCS)."""
    return _PREFIX.fullmatch(prefix) is not None and not any(part in (".", "..") for part in prefix.split("/"))


# --- builders --------------------------------------------------------------------------------------------------------

def archive_filename(event_id: int, extension: str = ARCHIVE_EXTENSION) -> str:
    """The file name an export downloads as: ``event<id>`` and its format's ``extension`` (with its dot)."""
    if not isinstance(extension, str) or _EXTENSION.fullmatch(extension) is None:
        raise ValueError(f"an export's file extension is a dot and 1 to 16 letters or digits, not {extension!r}")
    return f"event{event_id}{extension}"


def export_key(event_id: int, task_id: str, extension: str = ARCHIVE_EXTENSION) -> str:
    return f"exports/event{event_id}/{task_id}/{archive_filename(event_id, extension)}"


def export_filename(key: str) -> str:
    """The download name of an export's object: the key's last segment (``archive_filename`` built it)."""
    return key.rsplit("/", 1)[-1]


def safe_filename(filename: str) -> str:
    """A storage-safe version of an uploaded archive's name: its last path segment, in ``[A-Za-z0-9._-]``, no ``..``.

    ``"../My Event (2016).ZIP"`` -> ``"My_Event_2016.zip"``; never empty.
    """
    name = re.split(r"[\\/]", filename)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _FILE_NAME_DROP.sub("_", stem).strip("_")[: MAX_FILENAME - 8] or "archive"
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext).lower()[:6]
    return f"{stem}.{ext}" if ext else stem


def import_key(task_id: str, filename: str) -> str:
    """Storage key of an uploaded archive: ``imports/<task_id>/<safe filename>``."""
    return f"imports/{task_id}/{safe_filename(filename)}"


def import_media_key(task_id: str, member: str) -> str:
    """``imports/<task_id>/media/<member>`` with every segment reduced to storage-safe characters."""
    segments = [_SEGMENT_DROP.sub("_", s).strip(".") or "_" for s in member.split("/") if s not in ("", ".", "..")]
    return import_media_prefix(task_id) + "/".join(segments or ["_"])


def import_media_prefix(task_id: str) -> str:
    """What every media key of an import starts with (``imports/<task_id>/media/``)."""
    return f"imports/{task_id}/media/"


def upload_key(user_id: int, name: str, upload_id: str | None = None) -> str:
    """``uploads/<user id>/<uuid>/<name>``: a fresh uuid per file, so equal names never collide (``name`` is
    already storage-safe: ``media_uploads.upload_file_name``)."""
    return f"uploads/{int(user_id)}/{upload_id or uuid.uuid4()}/{name}"


def public_url(gateway_url: str, key: str) -> str:
    """The stable public address of a public object: ``<GATEWAY_URL>/media/<key>``."""
    return f"{gateway_url.rstrip('/')}/media/{key}"  # keys are URL-safe by construction


# --- parsers ---------------------------------------------------------------------------------------------------------

def is_import_media_key(key: str) -> bool:
    return _IMPORT_MEDIA_KEY.fullmatch(key) is not None and ".." not in key and "/./" not in key


def is_upload_key(key: str) -> bool:
    return _UPLOAD_KEY.fullmatch(key) is not None and ".." not in key


def is_public_key(key: str) -> bool:
    """Whether ``GET /media/<key>`` may serve ``key`` without credentials."""
    return is_upload_key(key) or is_import_media_key(key)


def key_context(key: str) -> dict[str, str | int | None]:
    """``task_id`` and ``event_id`` when the key's layout names them (exports and imports), else ``None``."""
    match = _EXPORT_PREFIX.match(key)
    if match:
        return {"task_id": match.group(2), "event_id": int(match.group(1))}
    match = _IMPORT_PREFIX.match(key)
    if match:
        return {"task_id": match.group(1), "event_id": None}
    return {"task_id": None, "event_id": None}


def _origin(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port, parts.path


def key_of_url(url: str, gateway_url: str) -> str | None:
    """The key of a public media address of this platform (``<gateway_url>/media/<key>``), else ``None``.

    Scheme, host and port must be the gateway's; the query and fragment are ignored, as the gateway ignores them.
    A key that is not public (``/media/exports/...``) gives ``None``: it is not one of the platform's media.
    """
    found, gateway = _origin(url), _origin(gateway_url)
    if found is None or gateway is None or found[:3] != gateway[:3]:
        return None
    prefix = gateway[3].rstrip("/") + "/media/"
    if not found[3].startswith(prefix):
        return None
    key = unquote(found[3][len(prefix):])
    return key if is_public_key(key) else None
