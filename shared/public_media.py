"""The platform's public media addresses: ``<GATEWAY_URL>/media/<key>`` for the objects anyone may read.

Two kinds of objects are public: media re-hosted by imports (``imports/<task id>/media/...``) and files of the upload
API (``uploads/<user id>/<uuid>/<name>``). The gateway serves exactly these keys (anything else is a 404), and the
exporter recognises these addresses in event data so that it reads the platform's own media from storage by key
instead of fetching a loopback URL; both decide with the functions below.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["is_import_media_key", "is_public_key", "is_upload_key", "key_of_url", "public_url"]

_IMPORT_MEDIA_KEY = re.compile(r"imports/[0-9a-f-]{36}/media/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")
_UPLOAD_KEY = re.compile(r"uploads/[0-9]+/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/"
                         r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_import_media_key(key: str) -> bool:
    return _IMPORT_MEDIA_KEY.fullmatch(key) is not None and ".." not in key and "/./" not in key


def is_upload_key(key: str) -> bool:
    return _UPLOAD_KEY.fullmatch(key) is not None and ".." not in key


def is_public_key(key: str) -> bool:
    """Whether ``GET /media/<key>`` may serve ``key`` without credentials."""
    return is_upload_key(key) or is_import_media_key(key)


def public_url(gateway_url: str, key: str) -> str:
    return f"{gateway_url.rstrip('/')}/media/{key}"  # keys are URL-safe by construction


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
