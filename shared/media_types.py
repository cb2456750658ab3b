"""What media bytes are, judged by their content: the one place that decides (exporter, importer, upload API).

Names and declared types lie: OTS16's ``session_44.mp3`` is an S3 ``<Error><Code>NoSuchKey`` page, servers answer
``200 text/html`` for missing photos, and an ``.svg`` "logo" can carry scripts. So content is judged by its leading
bytes (the first ``SNIFF_BYTES``):

* ``identify(head)``: (family, description) of a known format: families ``image``, ``document``, ``audio``,
  ``video``, ``av`` (containers that hold sound or pictures: MP4, Ogg, Matroska, ASF), ``markup`` (HTML, XML),
  ``text`` (JSON, plain text), ``empty``.
* ``sniff(head, kind)``: ``None`` if the bytes plausibly are media of ``kind`` (image, document, audio, video), else
  a reason for people. HTML, XML and JSON are never media; SVG and files with script markup in their head are never
  images (they can run scripts where they are shown).
* ``extension_for(head, kind)``: the usual extension of the detected format (``".jpg"``), for URLs without one.

Only the head is read: a script hidden past ``SNIFF_BYTES`` of a real image is not found (storage serves every
object as an attachment with ``X-Content-Type-Options: nosniff``, which keeps such a file inert in browsers).
"""

from __future__ import annotations

import re

__all__ = ["MEDIA_KINDS", "SNIFF_BYTES", "extension_for", "identify", "is_never_media", "sniff"]

MEDIA_KINDS = ("image", "document", "audio", "video")
SNIFF_BYTES = 8192

# Families a kind accepts: "av" containers (MP4, Ogg, Matroska, ASF) may hold sound or pictures.
_ACCEPTS = {
    "image": {"image"},
    "document": {"document", "image"},
    "audio": {"audio", "av"},
    "video": {"video", "av"},
}
_NOUN = {"image": "an image", "document": "a document", "audio": "audio", "video": "a video"}
_SVG_RE = re.compile(
    rb"^\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*|<\?[^>]*\?>\s*)*<svg[\s>/:]",
    re.IGNORECASE | re.DOTALL,
)
# Markup that makes a browser run code: in an "image" it is a polyglot (a GIF or JPEG comment holding HTML/JS).
_SCRIPT_RE = re.compile(rb"<\s*(?:script|svg|html|iframe|object|embed)[\s>/]|<\?php|javascript:", re.IGNORECASE)
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
# description -> extension; a tuple is (for audio, otherwise) for containers that hold either.
_EXTENSIONS: dict[str, str | tuple[str, str]] = {
    "JPEG image": ".jpg",
    "PNG image": ".png",
    "GIF image": ".gif",
    "WebP image": ".webp",
    "BMP image": ".bmp",
    "icon": ".ico",
    "TIFF image": ".tif",
    "AVIF image": ".avif",
    "HEIC image": ".heic",
    "HEIF image": ".heif",
    "WAV audio": ".wav",
    "AVI video": ".avi",
    "M4A audio": ".m4a",
    "M4B audio": ".m4b",
    "M4P audio": ".m4p",
    "F4A audio": ".f4a",
    "QuickTime video": ".mov",
    "QuickTime media": ".mov",
    "MP4 media": (".m4a", ".mp4"),
    "PDF document": ".pdf",
    "PowerPoint presentation (PPTX)": ".pptx",
    "Word document (DOCX)": ".docx",
    "Excel workbook (XLSX)": ".xlsx",
    "OpenDocument presentation": ".odp",
    "OpenDocument text": ".odt",
    "OpenDocument spreadsheet": ".ods",
    "zip container (office document)": ".zip",
    "MP3 audio": ".mp3",
    "MPEG audio (MP3)": ".mp3",
    "AAC audio": ".aac",
    "Ogg media": (".ogg", ".ogv"),
    "FLAC audio": ".flac",
    "AIFF audio": ".aiff",
    "AMR audio": ".amr",
    "WebM media": ".webm",
    "Matroska media": (".mka", ".mkv"),
    "ASF (Windows Media)": (".wma", ".wmv"),
    "FLV video": ".flv",
    "MPEG video": ".mpg",
    "MPEG transport stream": ".ts",
}
_ODF_TYPES = {
    b"application/vnd.oasis.opendocument.presentation": "OpenDocument presentation",
    b"application/vnd.oasis.opendocument.text": "OpenDocument text",
    b"application/vnd.oasis.opendocument.spreadsheet": "OpenDocument spreadsheet",
}
_OOXML_PARTS = ((b"ppt/", "PowerPoint presentation (PPTX)"), (b"word/", "Word document (DOCX)"),
                (b"xl/", "Excel workbook (XLSX)"))


def identify(head: bytes) -> tuple[str, str] | None:
    """(family, description) of content from its leading bytes, or None if unrecognised."""
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
        return "document", _zip_document(b)
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
        return "av", "WebM media" if b"webm" in b[:64] else "Matroska media"
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


def _zip_document(b: bytes) -> str:
    """Office formats are zips: ODF names its type in a first ``mimetype`` member, OOXML by its parts' folders."""
    offset = 0
    for _ in range(16):  # the first local file headers inside the head
        if b[offset:offset + 4] != b"PK\x03\x04" or len(b) < offset + 30:
            break
        size = int.from_bytes(b[offset + 18:offset + 22], "little")
        name_length = int.from_bytes(b[offset + 26:offset + 28], "little")
        extra_length = int.from_bytes(b[offset + 28:offset + 30], "little")
        name = b[offset + 30:offset + 30 + name_length]
        data = offset + 30 + name_length + extra_length
        if name == b"mimetype":
            mime = b[data:data + size]
            if mime in _ODF_TYPES:
                return _ODF_TYPES[mime]
        for part, description in _OOXML_PARTS:
            if name.startswith(part):
                return description
        offset = data + size
    return "zip container (office document)"


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


def is_never_media(head: bytes) -> str | None:
    """A reason when ``head`` starts an HTML, XML or JSON body (error pages served in place of media), else None."""
    found = identify(head)
    if found is not None and (found[0] == "markup" or found[1] == "a JSON document"):
        return f"{found[1]}, not media (an error page saved as media?)"
    return None


def sniff(head: bytes, kind: str) -> str | None:
    """None if ``head`` plausibly starts a file of ``kind``; otherwise a human reason."""
    found = identify(head)
    noun = _NOUN[kind]
    if found is None:
        return f"unrecognised content, not a known {kind} format"
    family, description = found
    if description == "SVG image":
        return f"an SVG image, not accepted as {noun} (SVG can carry scripts)"
    if family in ("markup", "text"):
        return f"{description}, not {noun} (an error page saved as media?)"
    if family not in _ACCEPTS[kind]:
        return f"{description}, not {noun}"
    if family == "image" and _SCRIPT_RE.search(head):
        return f"a {description} with script markup inside, not accepted as {noun}"
    return None


def extension_for(head: bytes, kind: str | None = None) -> str:
    """The usual extension (``".jpg"``) of the format ``head`` starts, or ``""`` when it has no single one."""
    found = identify(head)
    if found is None:
        return ""
    ext = _EXTENSIONS.get(found[1], "")
    if isinstance(ext, tuple):
        return ext[0] if kind == "audio" else ext[1]
    return ext
