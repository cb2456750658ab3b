"""Media values of archive records: what they point at, and whether the bytes are what the field says.

A media field holds an absolute URL (kept as is), a zip-relative path such as ``/images/speakers/X_1.jpg`` or
``audio/session_40.mp3`` (present in the archive or not), or rubbish (``"Wroclaw"`` in a photo field). Archives
also carry files that are not what their name says: OTS16's ``session_44.mp3`` is an S3 XML error page. Content is
judged by its leading bytes, never by the name.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

MEDIA_KINDS = ("image", "document", "audio", "video")
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
SNIFF_BYTES = 8192

# Families a kind accepts: "av" containers (MP4, Ogg, Matroska, ASF) may hold sound or pictures.
_ACCEPTS = {
    "image": {"image"},
    "document": {"document", "image"},
    "audio": {"audio", "av"},
    "video": {"video", "av"},
}
_NOUN = {"image": "an image", "document": "a document", "audio": "audio", "video": "a video"}
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_SVG_RE = re.compile(
    rb"^\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*|<\?[^>]*\?>\s*)*<svg[\s>/:]",
    re.IGNORECASE | re.DOTALL,
)
_FTYP_BRANDS = {
    b"M4A ": ("audio", "M4A audio"),
    b"M4B ": ("audio", "M4B audio"),
    b"M4P ": ("audio", "M4P audio"),
    b"F4A ": ("audio", "F4A audio"),
    b"avif": ("image", "AVIF image"),
    b"avis": ("image", "AVIF image"),
    b"heic": ("image", "HEIC image"),
    b"heix": ("image", "HEIC image"),
    b"mif1": ("image", "HEIF image"),
    b"msf1": ("image", "HEIF image"),
    b"qt  ": ("video", "QuickTime video"),
}


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


def identify(head: bytes) -> tuple[str, str] | None:
    """(family, description) of content from its leading bytes, or None if unrecognised.

    Families: image, document, audio, video, av, markup, text, empty.
    """
    b = head
    if not b:
        return "empty", "an empty file"
    if b.startswith(b"\xff\xd8\xff"):
        return "image", "JPEG image"
    if b.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "PNG image"
    if b[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "GIF image"
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return "image", "WebP image"
    if b[:4] == b"RIFF" and b[8:12] == b"WAVE":
        return "audio", "WAV audio"
    if b[:4] == b"RIFF" and b[8:12] == b"AVI ":
        return "video", "AVI video"
    if b[:2] == b"BM" and len(b) >= 26 and b[6:10] == b"\x00\x00\x00\x00":
        return "image", "BMP image"
    if b[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(b) > 6 and b[4] > 0:
        return "image", "icon"
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "TIFF image"
    if b[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(b[8:12], ("av", "MP4 media"))
    if b[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "av", "QuickTime media"
    if b.startswith(b"%PDF-"):
        return "document", "PDF document"
    if b.startswith(b"PK\x03\x04"):
        return "document", "zip container (office document)"
    if b.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "document", "OLE document"
    if b.startswith(b"ID3"):
        return "audio", "MP3 audio"
    if b.startswith(b"OggS"):
        return "av", "Ogg media"
    if b.startswith(b"fLaC"):
        return "audio", "FLAC audio"
    if b[:4] == b"FORM" and b[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "AIFF audio"
    if b.startswith(b"#!AMR"):
        return "audio", "AMR audio"
    if b.startswith(b"\x1aE\xdf\xa3"):
        return "av", "Matroska/WebM media"
    if b.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "av", "ASF (Windows Media)"
    if b.startswith(b"FLV\x01"):
        return "video", "FLV video"
    if b[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video", "MPEG video"
    if b[0] == 0x47 and len(b) > 188 and b[188] == 0x47:
        return "video", "MPEG transport stream"
    if len(b) >= 2 and b[0] == 0xFF and (b[1] & 0xE0) == 0xE0 and (b[1] & 0x06) != 0:
        return "audio", "MPEG audio (MP3)"
    if len(b) >= 2 and b[0] == 0xFF and (b[1] & 0xF6) == 0xF0:
        return "audio", "AAC audio"
    return _identify_text(b)


def _identify_text(b: bytes) -> tuple[str, str] | None:
    body = b[3:] if b.startswith(b"\xef\xbb\xbf") else b
    if _SVG_RE.match(body):
        return "image", "SVG image"
    stripped = body.lstrip()
    lower = stripped[:64].lower()
    if lower.startswith(b"<?xml"):
        return "markup", "an XML document"
    if lower.startswith(b"<!doctype html") or lower.startswith(b"<html") or lower.startswith(b"<head"):
        return "markup", "an HTML page"
    if lower.startswith(b"<"):
        return "markup", "an XML/HTML document"
    sample = stripped[:1024]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # not merely a character cut at the end of the sample
            return None
        text = sample[: exc.start].decode("utf-8")
    if text and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text):
        if text[:1] in "{[":
            return "text", "a JSON document"
        return "text", "plain text"
    return None


def sniff(head: bytes, kind: str) -> str | None:
    """None if ``head`` plausibly starts a file of ``kind``; otherwise a human reason."""
    found = identify(head)
    noun = _NOUN[kind]
    if found is None:
        return f"unrecognised content, not a known {kind} format"
    family, description = found
    if family in _ACCEPTS[kind]:
        return None
    if family in ("markup", "text"):
        return f"{description}, not {noun} (an error page saved as media?)"
    return f"{description}, not {noun}"
