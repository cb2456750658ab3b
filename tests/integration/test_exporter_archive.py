"""The exporter's archive stream without a broker: a valid zip, deterministic per request, flat in memory use."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from shared.archive.writer import EventNotFound, ExportReport, generate_archive
from shared.db import make_engine, make_session_factory
from shared.media_fetcher import MediaFetcher
from tools.synthetic import create_synthetic_event

WHEN = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
NO_MEDIA = {"image": False, "video": False, "document": False, "audio": False}


@pytest.fixture
def db(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory() as session:
        event_id = create_synthetic_event(session, sessions=300)
        session.commit()
    return factory, event_id


def _archive(factory, event_id, options=NO_MEDIA) -> tuple[bytes, ExportReport]:
    report = ExportReport()
    chunks = generate_archive(factory, event_id, options, fetcher=MediaFetcher(), root_url="http://x/",
                              exported_at=WHEN, report=report)
    return b"".join(chunks), report


def test_archive_is_a_valid_zip_with_meta_digests(db):
    body, report = _archive(*db)
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    meta = json.loads(archive.read("meta"))
    assert meta["exported_at"] == "2026-11-21T10:00:00Z"
    for name, info in meta["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == info["sha256"]
        assert len(archive.read(name)) == info["size"]
    assert meta["files"]["sessions"]["count"] == len(json.loads(archive.read("sessions"))) == 300
    assert report.files == meta["files"]


def test_same_request_gives_the_same_bytes(db):
    assert _archive(*db)[0] == _archive(*db)[0]


def test_non_url_media_values_are_kept_and_reported(db):
    factory, event_id = db
    from shared.models.events import Speaker

    with factory() as session:
        speaker = session.query(Speaker).filter_by(event_id=event_id).order_by(Speaker.id).first()
        speaker.photo = "/images/speakers/already_local.jpg"
        session.commit()
        speaker_id = speaker.id
    body, report = _archive(factory, event_id, {**NO_MEDIA, "image": True})
    speakers = json.loads(zipfile.ZipFile(io.BytesIO(body)).read("speakers"))
    assert next(s for s in speakers if s["id"] == speaker_id)["photo"] == "/images/speakers/already_local.jpg"
    assert [(w["file"], w["record_id"], w["code"]) for w in report.warnings] == [
        ("speakers", speaker_id, "media_not_url")]


def test_unknown_event(db):
    factory, _ = db
    with pytest.raises(EventNotFound):
        _archive(factory, 987654)
