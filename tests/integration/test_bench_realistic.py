"""The benchmark's realistic events (``bench/realistic.py``): FOSSASIA16 cycled to size is a valid legacy archive
whose relations agree both ways, and both floors run on it."""

from __future__ import annotations

import zipfile

import pytest
import sqlalchemy as sa

from bench import realistic
from shared.archive.loader import load_archive
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models.events import Session, Speaker


@pytest.fixture
def sample(samples_dir):
    return realistic.load_sample(samples_dir / "open_event" / "legacy" / "FOSSASIA16")


@pytest.mark.parametrize("sessions", [1, 493, 1200])
def test_cycled_event_keeps_its_relations_consistent(sample, sessions):
    files = realistic.cycle_event(sample, sessions)
    assert len(files["sessions"]) == sessions
    session_ids = [s["id"] for s in files["sessions"]]
    speaker_ids = [s["id"] for s in files["speakers"]]
    assert session_ids == list(range(1, sessions + 1)) and speaker_ids == list(range(1, len(speaker_ids) + 1))
    speakers = {s["id"]: s for s in files["speakers"]}
    listed = {(sp["id"], s["id"]) for s in files["sessions"] for sp in s["speakers"]}
    assert listed == {(sp["id"], ref["id"]) for sp in files["speakers"] for ref in sp["sessions"]}
    assert all(sp["id"] in speakers for s in files["sessions"] for sp in s["speakers"])
    tracks = {t["id"] for t in files["tracks"]}
    assert {(s["track"]["id"], s["id"]) for s in files["sessions"] if s["track"]} == {
        (t["id"], ref["id"]) for t in files["tracks"] for ref in t["sessions"]}
    assert all(s["track"]["id"] in tracks for s in files["sessions"] if s["track"])
    assert all(sp.get("photo") is None for sp in files["speakers"])  # media off unless asked


def test_the_archive_loads_through_the_hardened_reader_and_the_floors_run(sample, tmp_path, sqlite_url):
    archive = realistic.write_archive(realistic.cycle_event(sample, 1200), tmp_path / "event.zip")
    with zipfile.ZipFile(archive.path) as z:
        assert z.namelist() == list(realistic.MEMBERS)
    assert archive.json_bytes > 2 * archive.zip_bytes  # real text: deflate does real work
    upgrade_to_head(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with make_session_factory(engine)() as session:
            result = load_archive(session, archive.path, keep_ids=False)
            session.commit()
            counts = {model.__name__: session.scalar(sa.select(sa.func.count()).select_from(model).where(
                model.event_id == result.event_id)) for model in (Session, Speaker)}
    finally:
        engine.dispose()
    assert counts == {"Session": 1200, "Speaker": archive.speakers}
    assert result.counts["session_speakers"] == archive.links
    assert realistic.import_floor(archive.path, tmp_path / "floor.db") > 0
    seconds, size = realistic.export_floor(realistic.read_files(archive.path))
    assert seconds > 0 and 0 < size < archive.json_bytes
