"""Content sniffing (``shared.media_types``) and the platform's public media addresses (``shared.object_keys``)."""

from __future__ import annotations

import io
import zipfile

import pytest

from shared import object_keys
from shared.media_types import extension_for, identify, is_never_media, sniff

GATEWAY = "http://127.0.0.1:8000"
UPLOAD_KEY = "uploads/2/4f0c1c1e-0000-4000-8000-000000000001/logo.png"
IMPORT_KEY = "imports/4f0c1c1e-0000-4000-8000-000000000001/media/images/speakers/A_1.jpg"


def office(members: dict[str, bytes], first_stored: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if first_stored:
            archive.writestr(zipfile.ZipInfo(first_stored), members.pop(first_stored), zipfile.ZIP_STORED)
        for name, data in members.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


ODP = office({"mimetype": b"application/vnd.oasis.opendocument.presentation", "content.xml": b"<x/>"}, "mimetype")
PPTX = office({"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"})
S3_ERROR = b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"


@pytest.mark.parametrize(("head", "kind", "extension"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image", ".jpg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image", ".png"),
    (b"GIF89a\x01\x00", "image", ".gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image", ".webp"),
    (b"ID3\x03\x00", "audio", ".mp3"),
    (b"\xff\xfb\x90\x64", "audio", ".mp3"),
    (b"OggS\x00\x02", "audio", ".ogg"),
    (b"OggS\x00\x02", "video", ".ogv"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio", ".wav"),
    (b"fLaC\x00\x00", "audio", ".flac"),
    (b"\x00\x00\x00\x20ftypM4A \x00", "audio", ".m4a"),
    (b"\x00\x00\x00\x20ftypisom\x00", "video", ".mp4"),
    (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\x82\x84webm", "video", ".webm"),
    (b"%PDF-1.4\n", "document", ".pdf"),
    (ODP, "document", ".odp"),
    (PPTX, "document", ".pptx"),
])
def test_media_are_recognised_and_named_by_content(head, kind, extension):
    assert sniff(head, kind) is None, identify(head)
    assert extension_for(head, kind) == extension


@pytest.mark.parametrize(("head", "kind", "says"), [
    (S3_ERROR, "audio", "XML"),  # OTS16's session_44.mp3
    (b"<!DOCTYPE html><html><body>404</body></html>", "image", "HTML"),
    (b'{"error": "not found"}', "document", "JSON"),
    (b'[{"id": 1}]', "video", "JSON"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image", "SVG"),
    (b"<svg onload='alert(1)'></svg>", "document", "SVG"),
    (b"GIF89a\x01\x00\x01\x00\x80\x00\x00!\xfe\x10<script>x</script>", "image", "script"),
    (b"\xff\xd8\xff\xfe\x00\x20<html><body onload=x>", "image", "script"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100) + b"<?php system($_GET['c']); ?>", "image", "script"),
    (b"ID3\x03\x00", "image", "not an image"),
    (b"\x00\x01\x02\x03garbage\x99", "audio", "unrecognised"),
])
def test_what_is_not_media_of_its_kind_is_refused_with_a_reason(head, kind, says):
    reason = sniff(head, kind)
    assert reason is not None and says in reason, reason


def test_markup_and_json_are_never_media_whatever_the_kind():
    for head in (S3_ERROR, b"<html>", b'{"a": 1}', b"\xef\xbb\xbf  <!doctype html>"):
        assert is_never_media(head) is not None
    for head in (b"\xff\xd8\xff\xe0", b"ID3", b"%PDF-1.7", b"plain words are odd media, but not a page"):
        assert is_never_media(head) is None


def test_unknown_content_has_no_extension():
    assert extension_for(b"\x00\x01\x02garbage") == ""
    assert extension_for(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") == ""  # OLE: .doc, .ppt or .xls, we cannot tell


@pytest.mark.parametrize(("url", "key"), [
    (f"{GATEWAY}/media/{UPLOAD_KEY}", UPLOAD_KEY),
    (f"{GATEWAY}/media/{IMPORT_KEY}", IMPORT_KEY),
    (f"HTTP://127.0.0.1:8000/media/{IMPORT_KEY}?v=2#top", IMPORT_KEY),  # the gateway ignores query and fragment
    (f"http://127.0.0.1:8000/media/{IMPORT_KEY.replace('A_1', 'A%5F1')}", IMPORT_KEY),
])
def test_platform_media_addresses_give_their_key(url, key):
    assert object_keys.key_of_url(url, GATEWAY) == key


@pytest.mark.parametrize("url", [
    f"{GATEWAY}/media/exports/event1/4f0c1c1e-0000-4000-8000-000000000001/event1.zip",  # not public: no key
    f"{GATEWAY}/media/imports/x/../../exports/event1.zip",
    f"{GATEWAY}/media/uploads/2/4f0c1c1e-0000-4000-8000-000000000001/../../../secret",
    f"http://127.0.0.1:8001/media/{UPLOAD_KEY}",  # another port
    f"http://localhost:8000/media/{UPLOAD_KEY}",  # another host name: a foreign URL, for the guard to judge
    f"https://127.0.0.1:8000/media/{UPLOAD_KEY}",
    f"http://user:pw@127.0.0.1:8000/media/{UPLOAD_KEY}",
    f"{GATEWAY}/v1/media/{UPLOAD_KEY}",
    "http://[::1:8000/media/x",
])
def test_other_addresses_are_not_platform_media(url):
    assert object_keys.key_of_url(url, GATEWAY) is None


def test_gateway_under_a_path_prefix():
    assert object_keys.key_of_url(f"https://events.example.org/api/media/{UPLOAD_KEY}",
                                   "https://events.example.org/api") == UPLOAD_KEY
