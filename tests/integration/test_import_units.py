"""Import logic without a broker: upload streaming, file names, media planning, the streaming loader, the write lock."""

from __future__ import annotations

import io
import json
import zipfile

import eventlet
import pytest
import sqlalchemy as sa
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from services.api_gateway import uploads
from services.importer import media
from shared import object_batch, object_keys
from shared.archive import ARRAY_FILES, iter_file_text
from shared.archive import loader as loader_module
from shared.archive.loader import load_event
from shared.archive.reader import open_archive
from shared.http import ApiError
from tests.support.legacy_source import ParsedSource, load_legacy_data, read_legacy_source

# --- uploads -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "safe"), [
    ("event.zip", "event.zip"),
    ("../../etc/passwd.zip", "passwd.zip"),
    ("C:\\Users\\me\\My Event (2016).ZIP", "My_Event_2016.zip"),
    ("..zip", "archive.zip"),
    ("späße.zip", "sp_e.zip"),
    ("a" * 300 + ".zip", "a" * 92 + ".zip"),
])
def test_safe_filename(name, safe):
    assert object_keys.safe_filename(name) == safe
    assert object_keys.import_key("t", name) == f"imports/t/{safe}"


def _request(body: bytes | None = None, *, files: dict | None = None, content_type: str | None = None,
             chunked: bool = False) -> Request:
    if files is not None:
        builder = EnvironBuilder(method="POST", data=files)
        environ = builder.get_environ()
    else:
        body = body or b""
        environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_length=len(body),
                                 content_type=content_type).get_environ()
    if chunked:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    return Request(environ)


class Sink:
    """A Store that counts what it receives, chunk by chunk."""

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self.filename = ""

    def __call__(self, filename: str, chunks):
        self.filename = filename
        size = 0
        for chunk in chunks:
            self.chunks.append(len(chunk))
            size += len(chunk)
        return {"key": "imports/x/" + filename, "size": size, "sha256": "0" * 64}


def test_file_part_is_streamed_in_chunks():
    data = bytes(range(256)) * 4096  # 1 MiB
    sink = Sink()
    request = _request(files={"note": "hello", "file": (io.BytesIO(data), "Event 1.zip")}, chunked=True)
    upload = uploads.receive_archive(request, max_bytes=2 * 2**20, store=sink)
    assert upload.size == len(data) and upload.filename == "Event 1.zip" and upload.key == "imports/x/Event 1.zip"
    assert len(sink.chunks) > 4 and max(sink.chunks) <= 2 * uploads.CHUNK_SIZE  # never the whole file at once


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"files": {"file": (io.BytesIO(b"PK"), "a.tar.gz")}}, 400, "invalid_file_type"),
    ({"files": {"upload": (io.BytesIO(b"PK"), "a.zip")}}, 400, "missing_file"),
    ({"files": {"file": "just text", "other": (io.BytesIO(b"PK"), "b.zip")}}, 400, "missing_file"),
    ({"files": {"file": (io.BytesIO(b""), "a.zip")}}, 400, "empty_file"),
    ({"body": b"PK", "content_type": "application/zip"}, 400, "not_multipart"),
    ({"body": b"", "content_type": "multipart/form-data; boundary=x"}, 400, "empty_body"),
    ({"body": b"x", "content_type": "multipart/form-data"}, 400, "not_multipart"),
    ({"body": b"no boundary here", "content_type": "multipart/form-data; boundary=zz"}, 400, "malformed_multipart"),
    ({"body": b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK",
      "content_type": "multipart/form-data; boundary=zz"}, 400, "incomplete_body"),
    ({"files": {"file": (io.BytesIO(b"P" * 2048), "a.zip")}}, 413, "too_large"),
    ({"files": {"file": (io.BytesIO(b"P" * 2048), "a.zip")}, "chunked": True}, 413, "too_large"),
])
def test_bad_uploads(kwargs, status, code):
    sink = Sink()
    with pytest.raises(ApiError) as info:
        uploads.receive_archive(_request(**kwargs), max_bytes=1024, store=sink)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    if code not in ("too_large", "incomplete_body"):  # (those two abort a stream storage then discards)
        assert sink.chunks == []  # refused before anything reached storage


def test_a_text_part_named_like_a_file_field_is_refused_and_the_files_before_it_removed():
    """``files[]=1532372`` as a form field beside a real ``file`` was silently dropped (the contract test's
    negative data got 200): the client meant a file there, so the request fails and nothing stays stored."""
    from services.api_gateway import media_uploads

    stored: list[str] = []
    deleted: list[str] = []

    def put(key: str, chunks, content_type: str) -> dict:
        data = b"".join(chunks)
        stored.append(key)
        return {"size": len(data), "sha256": "0" * 64}

    body = (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n'
            b'--zz\r\nContent-Disposition: form-data; name="files[]"\r\n\r\n1532372\r\n--zz--\r\n')
    request = _request(body, content_type="multipart/form-data; boundary=zz")
    with pytest.raises(ApiError) as info:
        media_uploads.receive_uploads(request, kind="file", max_bytes=1024, user_id=1, put=put,
                                      delete=deleted.append)
    assert (info.value.status, info.value.code) == (400, "missing_file"), info.value.message
    assert len(stored) == 1 and deleted == stored


# --- media planning ------------------------------------------------------------------------------------------------


def test_media_keys_are_storage_safe():
    assert object_keys.import_media_key("t", "images/speakers/Raimo,Radczewski_23.jpg") == \
        "imports/t/media/images/speakers/Raimo_Radczewski_23.jpg"
    assert object_keys.import_media_key("t", "images/../x/./ä.png") == "imports/t/media/images/x/_.png"


def _zip_archive(path, files: dict[str, object], members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, value in files.items():
            z.writestr(name, json.dumps(value))
        for name, data in members.items():
            z.writestr(name, data)
    return open_archive(path)


def test_plan_and_rehost(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    jpeg = b"\xff\xd8\xff\xe0" + bytes(64)
    archive = _zip_archive(tmp_path / "a.zip", {
        "event": {"id": 1, "name": "E", "logo": "/images/logo.png", "background_image": "http://x/bg.jpg"},
        "speakers": [{"id": 5, "name": "A", "photo": "/images/speakers/A_5.jpg"},
                     {"id": 6, "name": "B", "photo": "/images/missing.jpg"},
                     {"id": 7, "name": "C", "photo": "/images/logo.png"}],
        "sessions": [{"id": 9, "title": "T", "audio": "audio/s.mp3", "slides": None}],
    }, {"images/logo.png": png, "images/speakers/A_5.jpg": jpeg,
        "audio/s.mp3": b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>"})
    plan = media.plan_media(archive, "task", "http://gw")
    assert plan.uploads == {"images/logo.png": "imports/task/media/images/logo.png",
                            "images/speakers/A_5.jpg": "imports/task/media/images/speakers/A_5.jpg"}
    assert [(w["code"], w["file"], w["record_id"], w["field"]) for w in plan.warnings] == [
        ("media_invalid", "sessions", 9, "audio"), ("media_missing", "speakers", 6, "photo")]
    event = plan.rewrite("event", archive.event())
    assert event["logo"] == "http://gw/media/imports/task/media/images/logo.png"
    assert event["background_image"] == "http://x/bg.jpg"
    speakers = [plan.rewrite("speakers", s) for s in archive.records("speakers")]
    assert [s["photo"] for s in speakers][1:] == [None, event["logo"]]
    assert plan.rewrite("sessions", next(archive.records("sessions")))["audio"] is None
    stored, progress = {}, []

    def upload_many(prefix, items, on_item):
        # Through the batch body format, as storage's data plane reads it.
        body = io.BytesIO(b"".join(object_batch.encode(items, on_item)))
        for header, chunks in object_batch.decode(body.read):
            assert header["key"].startswith(prefix)
            stored[header["key"]] = (b"".join(chunks), header["content_type"])

    written = media.rehost(archive, plan, "imports/task/media/", upload_many, lambda done, total: progress.append(done))
    assert sorted(written) == sorted(plan.uploads.values()) == sorted(stored)
    assert stored["imports/task/media/images/logo.png"] == (png, "image/png")
    assert stored["imports/task/media/images/speakers/A_5.jpg"] == (jpeg, "image/jpeg")
    assert progress == [0, 1, 2]
    archive.close()


# --- the streaming loader ------------------------------------------------------------------------------------------


class CountingSource(ParsedSource):
    """Parsed data served through fresh generators, counting how often each file is read."""

    def __init__(self, data) -> None:
        super().__init__(data)
        self.reads: dict[str, int] = {}

    def records(self, file):
        base = super().records(file)
        outer = self

        class Again:
            def __iter__(self):
                outer.reads[file] = outer.reads.get(file, 0) + 1
                yield from (dict(r) if isinstance(r, dict) else r for r in base)

        return Again()


def test_streaming_load_equals_parsed_load_in_small_batches(samples_dir, sqlite_factory, monkeypatch):
    data = read_legacy_source(samples_dir / "open_event" / "legacy" / "OTS16")
    with sqlite_factory() as db:
        reference = load_legacy_data(db, data, keep_ids=False)
        db.commit()
    monkeypatch.setattr(loader_module, "BATCH_ROWS", 7)
    source = CountingSource(data)
    progress = []
    with sqlite_factory() as db:
        result = load_event(db, source, keep_ids=False, on_progress=lambda *a: progress.append(a))
        db.commit()
    assert set(source.reads.values()) == {2}  # an index pass, then the rows
    assert progress[-1][1] == progress[-1][2] == sum(result.counts[f] for f in ARRAY_FILES) + \
        result.counts["session_speakers"]
    assert len(progress) > 20
    with sqlite_factory() as db:
        for file in ("event",) + ARRAY_FILES:
            a = json.loads("".join(iter_file_text(db, reference.event_id, file)))
            b = json.loads("".join(iter_file_text(db, result.event_id, file)))
            if file == "event":
                a, b = [a], [b]
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):  # same records, ids aside
                assert {k: v for k, v in x.items() if k not in ("id", "sessions", "speakers", "track",
                                                                 "session_type", "microlocation",
                                                                 "social_links")} == \
                    {k: v for k, v in y.items() if k not in ("id", "sessions", "speakers", "track", "session_type",
                                                             "microlocation", "social_links")}


def test_write_lock_waits_green_instead_of_failing(sqlite_factory):
    from services.importer.import_job import _begin_write

    order = []

    def writer(label: str, hold: float) -> None:
        with sqlite_factory() as db:
            conn = db.connection()
            _begin_write(conn, eventlet.sleep)
            order.append(f"{label} locked")
            conn.execute(sa.text("INSERT INTO users (email, password_hash, is_admin, created_at) "
                                 "VALUES (:e, 'x', 0, '2020-01-01')"), {"e": label})
            eventlet.sleep(hold)  # another green thread runs meanwhile: it must wait, not block the hub
            db.commit()
            order.append(f"{label} committed")

    first = eventlet.spawn(writer, "a", 0.3)
    eventlet.sleep(0.05)
    second = eventlet.spawn(writer, "b", 0)
    first.wait()
    second.wait()
    assert order == ["a locked", "a committed", "b locked", "b committed"]
