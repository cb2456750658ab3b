"""The upload API end to end: ``POST /v1/upload/file`` and ``/image`` on the real services over HTTP.

One stack for the module, with small upload limits so that the size checks are cheap. Every returned URL is fetched
anonymously (the ``/media/`` redirect to a signed storage link) and compared byte for byte with what was sent.
"""

from __future__ import annotations

import io
import re
import struct
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway import media_uploads, rules, uploads
from services.storage.backends.local import LocalBackend
from shared import object_keys
from shared.http import ApiError
from tests.support.e2e import Client, SystemBase, stack_for

MAX_BYTES = 256 * 1024  # the stack's UPLOAD_MAX_BYTES (and so the image limit too)
FILE_PATH = "/v1/upload/file"
IMAGE_PATH = "/v1/upload/image"


# --- content made by hand ------------------------------------------------------------------------------------------

def png_bytes(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG (red pixels), chunks with their CRCs."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([255, 0, 0]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def jpeg_bytes() -> bytes:
    """A valid baseline JPEG: one 8x8 mid-grey block, Huffman tables of a single 1-bit code (DC 0, AC end-of-block)."""

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15)
    return (b"\xff\xd8"
            + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + segment(0xDB, b"\x00" + bytes([1] * 64))
            + segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
            + segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            + b"\x3f"  # DC "0" + EOB "0", padded with ones
            + b"\xff\xd9")


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00" \
      b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def multipart(parts: list[tuple[str, bytes, bytes]], boundary: str = "upload-api-test") -> tuple[bytes, dict]:
    """A multipart body written byte by byte (file names with control characters that clients would escape)."""
    body = b""
    for field, filename, data in parts:
        body += (f"--{boundary}\r\n".encode() + b'Content-Disposition: form-data; name="' + field.encode()
                 + b'"; filename="' + filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data
                 + b"\r\n")
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# --- the stack -----------------------------------------------------------------------------------------------------

@dataclass
class System(SystemBase):
    def client(self, who: str = "alice") -> Client:
        return super().client(who)

    def upload_keys(self) -> set[str]:
        backend = LocalBackend(Path(self.env.env["STORAGE_DIR"]))
        return {info.key for info in backend.iter_objects() if info.key.startswith("uploads/")}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with stack_for(tmp_path_factory.mktemp("upload_api"), {"alice": False, "bob": False},
                   UPLOAD_MAX_BYTES=str(MAX_BYTES)) as run:
        run.start()
        yield System(env=run.env, users=run.users)


def assert_error(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"], error
    return error["message"]


def download(url: str) -> requests.Response:
    """Fetch a returned URL as a stranger would: no credentials, following the redirect to storage."""
    with requests.Session() as anonymous:
        anonymous.trust_env = False
        r = anonymous.get(url, timeout=30)
    assert r.status_code == 200, r.text
    return r


def upload_url_re(system: System, user: str = "alice") -> re.Pattern[str]:
    return re.compile(re.escape(system.url) + rf"/media/uploads/{system.users[user]}/[0-9a-f-]{{36}}/(?P<name>[^/]+)")


def name_of(system: System, url: str) -> str:
    match = upload_url_re(system).fullmatch(url)
    assert match, url
    return match["name"]


# --- tests ---------------------------------------------------------------------------------------------------------

def test_anonymous_and_bad_tokens_are_refused(system):
    for path in (FILE_PATH, IMAGE_PATH):
        assert_error(requests.post(system.url + path, files={"file": ("a.png", png_bytes())}, timeout=10),
                     401, "unauthorized")
        assert_error(Client(system.url, "not-a-token").post(path, files={"file": ("a.png", png_bytes())}),
                     401, "invalid_token")
    assert system.upload_keys() == set()


def test_single_file_answers_one_url_that_downloads_the_same_bytes(system):
    data = b"minutes of the meeting\n" * 100
    r = system.client().post(FILE_PATH, files={"file": ("Minutes 2016.txt", data, "text/plain")})
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert isinstance(url, str) and name_of(system, url) == "Minutes_2016.txt"

    redirect = requests.get(url, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302 and "signature=" in redirect.headers["Location"]
    assert redirect.headers["Cache-Control"].startswith("public")
    got = download(url)
    assert got.content == data
    assert got.headers["Content-Disposition"] == "attachment; filename=Minutes_2016.txt"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Type"] == "application/octet-stream"


def test_several_files_answer_urls_in_order(system):
    files = [("files[]", (f"part{i}.bin", bytes([i]) * (1000 + i))) for i in range(4)]
    files.insert(2, ("note", (None, "a plain field between the files is ignored")))
    r = system.client().post(FILE_PATH, files=files)
    assert r.status_code == 200, r.text
    urls = r.json()["url"]
    assert isinstance(urls, list) and len(urls) == 4 and len(set(urls)) == 4
    for i, url in enumerate(urls):
        assert name_of(system, url) == f"part{i}.bin"
        assert download(url).content == bytes([i]) * (1000 + i)
    # one file in files[] is still a list; the Open Event Server's /files path is the same endpoint
    r = system.client().post("/v1/upload/files", files=[("files[]", ("only.txt", b"x"))])
    assert r.status_code == 200 and isinstance(r.json()["url"], list) and len(r.json()["url"]) == 1, r.text


def test_real_images_are_accepted_and_served_as_images(system):
    alice = system.client()
    for name, data, mime in (("logo.PNG", png_bytes(), "image/png"), ("photo.jpeg", jpeg_bytes(), "image/jpeg"),
                             ("anim.gif", GIF, "image/gif")):
        r = alice.post(IMAGE_PATH, files={"file": (name, data, "application/octet-stream")})
        assert r.status_code == 200, r.text
        got = download(r.json()["url"])
        assert got.content == data and got.headers["Content-Type"] == mime
    # several images at once; a name without an extension gets the detected one
    r = alice.post(IMAGE_PATH, files=[("files[]", ("banner", png_bytes(40, 10))), ("files[]", ("b.jpg", jpeg_bytes()))])
    assert r.status_code == 200, r.text
    first, second = r.json()["url"]
    assert name_of(system, first) == "banner.png" and name_of(system, second) == "b.jpg"
    assert download(first).content == png_bytes(40, 10)


@pytest.mark.parametrize(("name", "data", "detected"), [
    ("photo.png", b"definitely not a picture, just some words\n", "plain text"),
    ("photo.jpg", HTML, "HTML page"),
    ("drawing.svg", SVG, "SVG"),
    ("doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(100), "PDF document"),
    ("cut.png", b"\x89PNG\r\n\x1a\n", "truncated or corrupt"),
    ("data.gif", bytes(range(256)) * 4, "unrecognised"),
])
def test_image_endpoint_judges_content_not_names(system, name, data, detected):
    before = system.upload_keys()
    message = assert_error(system.client().post(IMAGE_PATH, files={"file": (name, data, "image/png")}), 400,
                           "not_an_image")
    assert detected in message and name in message, message
    assert system.upload_keys() == before


def test_file_endpoint_takes_anything_but_serves_it_as_an_attachment(system):
    r = system.client().post(FILE_PATH, files={"file": ("page.html", HTML, "text/html")})
    assert r.status_code == 200, r.text
    got = download(r.json()["url"])
    assert got.content == HTML
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_a_refused_file_removes_the_ones_stored_before_it(system):
    before = system.upload_keys()
    r = system.client().post(IMAGE_PATH, files=[("files[]", ("ok.png", png_bytes())),
                                                ("files[]", ("ok2.jpg", jpeg_bytes())),
                                                ("files[]", ("evil.jpg", HTML))])
    assert "evil.jpg" in assert_error(r, 400, "not_an_image")
    assert system.upload_keys() == before


def test_oversized_files_are_refused_while_streaming(system):
    alice = system.client()
    before = system.upload_keys()
    big_png = png_bytes() + bytes(MAX_BYTES)
    for path, data in ((FILE_PATH, bytes(MAX_BYTES + 1)), (IMAGE_PATH, big_png)):
        assert "larger than the limit" in assert_error(alice.post(path, files={"file": ("big.png", data)}),
                                                       413, "too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: cut off at the limit
        yield b'--bb\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(MAX_BYTES // 65536 + 2):
            yield bytes(65536)
        yield b"\r\n--bb--\r\n"

    r = alice.post(FILE_PATH, data=chunked(), headers={"Content-Type": "multipart/form-data; boundary=bb"})
    assert_error(r, 413, "too_large")
    # a Content-Length beyond MAX_FILES files is refused before the body is read
    r = alice.post(FILE_PATH, files=[("files[]", (f"{i}.bin", bytes(MAX_BYTES // 2))) for i in range(25)])
    assert_error(r, 413, "too_large")
    # an oversized second file takes the first one with it
    r = alice.post(FILE_PATH, files=[("files[]", ("small.bin", b"123")),
                                     ("files[]", ("big.bin", bytes(MAX_BYTES + 1)))])
    assert_error(r, 413, "too_large")
    assert system.upload_keys() == before
    # exactly at the limit is fine
    r = alice.post(FILE_PATH, files={"file": ("edge.bin", bytes(MAX_BYTES))})
    assert r.status_code == 200, r.text
    assert len(download(r.json()["url"]).content) == MAX_BYTES


def test_file_names_are_sanitized(system):
    alice = system.client()
    body, headers = multipart([("file", b"../../etc/pa\x01ss\x1fwd\x7f file.txt", b"root:x:0:0")])
    r = alice.post(FILE_PATH, data=body, headers=headers)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert name_of(system, url) == "passwd_file.txt"
    assert download(url).headers["Content-Disposition"] == "attachment; filename=passwd_file.txt"

    body, headers = multipart([("files[]", "/home/me/photos/Ünïcode Photo (1).PNG".encode(), png_bytes()),
                               ("files[]", "日本語.png".encode(), png_bytes()),
                               ("files[]", b"..\x00.png", png_bytes())])
    r = alice.post(IMAGE_PATH, data=body, headers=headers)
    assert r.status_code == 200, r.text
    assert [name_of(system, url) for url in r.json()["url"]] == ["Unicode_Photo_1.png", "file.png", "file.png"]

    for bad in (b"../", b"..", b"\x01\x02\x03", b"///"):
        body, headers = multipart([("file", bad, b"data")])
        assert_error(alice.post(FILE_PATH, data=body, headers=headers), 400, "invalid_file_name")


def test_force_local(system):
    alice = system.client()
    r = alice.post(IMAGE_PATH + "?force_local=true", files={"file": ("local.png", png_bytes())})
    assert r.status_code == 200, r.text
    assert download(r.json()["url"]).content == png_bytes()
    r = alice.post(FILE_PATH + "?force_local=false", files={"file": ("default.txt", b"abc")})
    assert r.status_code == 200 and download(r.json()["url"]).content == b"abc", r.text
    assert_error(alice.post(FILE_PATH + "?force_local=perhaps", files={"file": ("a.txt", b"abc")}), 400,
                 "invalid_parameter")


@pytest.mark.parametrize("value", ["1", "yes", "0", "no", "", "TRUE", " true"])
def test_force_local_accepts_true_or_false_only(system, value):
    """The README: `?force_local=true`, `invalid_parameter` when it is not true/false; nothing is stored then."""
    before = system.upload_keys()
    r = system.client().post(FILE_PATH, params={"force_local": value}, files={"file": ("a.txt", b"abc")})
    assert_error(r, 400, "invalid_parameter")
    assert system.upload_keys() == before


def test_request_errors(system):
    alice = system.client()
    before = system.upload_keys()
    for path in (FILE_PATH, IMAGE_PATH):
        assert_error(alice.post(path, files={"upload": ("a.png", png_bytes())}), 400, "missing_file")
        assert_error(alice.post(path, files={"file": (None, "just a field")}), 400, "missing_file")
        assert_error(alice.post(path, files={"file": ("", b"")}), 400, "missing_file")  # empty file input
        assert_error(alice.post(path, files={"file": ("empty.png", b"")}), 400, "empty_file")
        assert_error(alice.post(path, data=png_bytes(), headers={"Content-Type": "image/png"}), 400, "not_multipart")
        assert_error(alice.post(path, json={"file": "x"}), 400, "not_multipart")
        assert_error(alice.post(path, files=[("file", ("a.png", png_bytes())), ("files[]", ("b.png", png_bytes()))]),
                     400, "invalid_request")
        assert_error(alice.post(path, files=[("file", ("a.png", png_bytes())), ("file", ("b.png", png_bytes()))]),
                     400, "invalid_request")
        assert_error(alice.post(path, files=[("files[]", (f"{i}.png", png_bytes())) for i in range(11)]),
                     400, "too_many_files")
    assert system.upload_keys() == before


def test_media_route_serves_only_existing_upload_keys(system):
    anonymous = requests.Session()
    anonymous.trust_env = False
    for path in ("/media/uploads/1/../../imports/x", "/media/uploads/1/not-a-uuid/a.png", "/media/uploads/a.png",
                 "/media/exports/1/event1.zip"):
        assert anonymous.get(system.url + path, timeout=10).status_code == 404, path
    missing = f"/media/uploads/{system.users['bob']}/00000000-0000-4000-8000-000000000000/none.png"
    assert anonymous.get(system.url + missing, timeout=10).status_code == 404


# --- without the stack: names and streaming ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "safe"), [
    ("photo.png", "photo.png"),
    ("../../etc/passwd", "passwd"),
    ("a\x00b\x1f\x7fc.JPG", "abc.jpg"),
    ("Ünïcode Photo (1).jpeg", "Unicode_Photo_1.jpeg"),
    ("report.v2..final.pdf", "report.v2.final.pdf"),
    ("x.tar.gz", "x.tar.gz"),
    ("日本語.pdf", "file.pdf"),
    (".htaccess", "file.htaccess"),
    ("a.\u202egnp.exe", "a.gnp.exe"),  # right-to-left override dropped
    ("a" * 300 + ".webp", "a" * media_uploads.MAX_STEM + ".webp"),
])
def test_upload_file_name(raw, safe):
    assert media_uploads.upload_file_name(raw) == safe


def test_upload_keys_are_served_by_the_media_route():
    key = object_keys.upload_key(7, "a.png")
    assert re.fullmatch(r"uploads/7/[0-9a-f-]{36}/a\.png", key) and rules.require_public_media(key) == key
    for bad in ("uploads/7/x/a.png", "uploads/a.png", "uploads/7/" + key.split("/")[2] + "/../a.png", "exports/1.zip"):
        with pytest.raises(ApiError) as info:
            rules.require_public_media(bad)
        assert info.value.status == 404


def test_files_stream_in_bounded_chunks():
    data = png_bytes() + bytes(range(256)) * 4096  # 1 MiB after a real PNG header
    chunks: list[int] = []

    def put(key: str, stream: Iterator[bytes], content_type: str) -> dict:
        assert content_type == "image/png" and key.endswith("/big.png")
        size = 0
        for chunk in stream:
            chunks.append(len(chunk))
            size += len(chunk)
        return {"size": size, "sha256": "0" * 64}

    environ = EnvironBuilder(method="POST", data={"file": (io.BytesIO(data), "big.png")}).get_environ()
    environ.pop("CONTENT_LENGTH")  # chunked
    environ["wsgi.input_terminated"] = True
    multiple, stored = media_uploads.receive_uploads(Request(environ), kind="image", max_bytes=2 * 2**20, user_id=1,
                                                     put=put, delete=lambda key: None)
    assert not multiple and stored[0].size == len(data) and stored[0].content_type == "image/png"
    assert len(chunks) > 4 and max(chunks) <= media_uploads.SNIFF_BYTES + 2 * uploads.CHUNK_SIZE


def test_a_deleted_upload_answers_410(system):
    from nameko.standalone.rpc import ClusterRpcProxy

    r = system.client().post(FILE_PATH, files={"file": ("gone.txt", b"soon gone", "text/plain")})
    url = r.json()["url"]
    key = url.split("/media/", 1)[1]
    with ClusterRpcProxy({"AMQP_URI": system.env.env["AMQP_URI"]}, timeout=10) as rpc:
        assert rpc.storage.delete(key) is True
    assert_error(requests.get(url, allow_redirects=False, timeout=10), 410, "media_gone")


def test_a_media_address_nothing_was_stored_at_answers_404(system):
    # Public key layouts, but storage's object index has no such object: a 404, never a redirect to a dead link.
    for key in (f"uploads/{system.users['alice']}/{uuid.uuid4()}/nothing.png",
                f"imports/{uuid.uuid4()}/media/images/speakers/Nobody_1.jpg"):
        assert_error(requests.get(f"{system.url}/media/{key}", allow_redirects=False, timeout=10), 404, "not_found")


@pytest.mark.parametrize(("name", "data", "stored", "mime"), [
    ("photo.png", jpeg_bytes(), "photo.jpg", "image/jpeg"),  # the client's extension is not what the bytes are
    ("logo.PNG", png_bytes(), "logo.png", "image/png"),
    ("avatar.html", GIF, "avatar.gif", "image/gif"),
    ("shot.jpeg", png_bytes(), "shot.png", "image/png"),
], ids=["jpeg-as-png", "png-upper", "gif-as-html", "png-as-jpeg"])
def test_image_endpoint_stores_the_extension_of_the_detected_type(system, name, data, stored, mime):
    r = system.client().post(IMAGE_PATH, files={"file": (name, data, "image/png")})
    assert r.status_code == 200, r.text
    assert name_of(system, r.json()["url"]) == stored
    got = download(r.json()["url"])
    assert got.content == data and got.headers["Content-Type"] == mime
    assert got.headers["Content-Disposition"] == f"attachment; filename={stored}"


def test_image_endpoint_refuses_images_carrying_scripts(system):
    polyglot = GIF[:13] + b"!\xfe\x1e<script>alert(1)</script>   \x00" + GIF[13:]
    before = system.upload_keys()
    message = assert_error(system.client().post(IMAGE_PATH, files={"file": ("cat.gif", polyglot, "image/gif")}), 400,
                           "not_an_image")
    assert "script" in message and "cat.gif" in message, message
    assert system.upload_keys() == before
