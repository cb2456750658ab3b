"""Media values of archive records: what they point at, and whether the bytes are what the field says.

A media field holds an absolute URL (kept as is), a zip-relative path such as ``/images/speakers/X_1.jpg`` or
``audio/session_40.mp3`` (present in the archive or not), or rubbish (``"Wroclaw"`` in a photo field). Archives
also carry files that are not what their name says: OTS16's ``session_44.mp3`` is an S3 XML error page. Content is
judged by its leading bytes, never by the name (``shared.media_types``).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

# Content sniffing lives in one module for the exporter, importer and upload API; re-exported for the reader.
from shared.media_types import MEDIA_KINDS, SNIFF_BYTES, identify, sniff

__all__ = ["FIELD_KINDS", "MEDIA_KINDS", "SNIFF_BYTES", "MediaRef", "identify", "is_http_url", "media_kind",
           "path_candidates", "sniff"]

# Record field (legacy names) or export flag -> kind of content expected.
FIELD_KINDS: dict[str, str] = {
    "photo": "image",
    "logo": "image",
    "background_image": "image",
    "track_image_url": "image",
    "thumbnail": "image",
    "large": "image",
    "icon": "image",
    "small": "image",
    "slides": "document",
    "audio": "audio",
    "video": "video",
    **{kind: kind for kind in MEDIA_KINDS},
}
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class MediaRef:
    """What a media value refers to.

    ``kind``: ``none`` (null or empty), ``url`` (absolute http(s) URL: keep it), ``member`` (a member of the
    archive, named by ``member``), ``absent`` (anything else: the importer sets null and warns with ``reason``).
    """

    kind: str
    value: Any
    member: str | None = None
    reason: str | None = None


def media_kind(field: str) -> str:
    """``"photo"`` -> ``"image"``; also accepts the kinds themselves (the export flags)."""
    try:
        return FIELD_KINDS[field]
    except KeyError:
        raise ValueError(f"{field!r} is not a media field") from None


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def path_candidates(value: str) -> tuple[list[str], str | None]:
    """Relative member paths a non-URL media value may name (as written, percent-decoded, NFC/NFD), or a reason."""
    text = value.strip()
    if text.startswith("//") or _SCHEME_RE.match(text):
        return [], "not an http(s) URL and not a path inside the archive"
    text = text.split("#", 1)[0].split("?", 1)[0].lstrip("/")
    candidates: list[str] = []
    for form in (text, unquote(text)):
        if not form or "\\" in form or "\x00" in form:
            continue
        normal = posixpath.normpath(form)
        if normal in (".", "..") or normal.startswith("../") or normal.startswith("/"):
            return [], "path leaves the archive"
        for variant in (normal, unicodedata.normalize("NFC", normal), unicodedata.normalize("NFD", normal)):
            if variant not in candidates:
                candidates.append(variant)
    if not candidates:
        return [], "not a usable path"
    return candidates, None
