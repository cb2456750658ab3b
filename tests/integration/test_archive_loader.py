"""Loader: archives in, the same archive out (kept or remapped ids), odd values, archive variants, errors."""

from __future__ import annotations

import json
import zipfile

import pytest
import sqlalchemy as sa

from shared.archive import (
    ARRAY_FILES,
    LoadError,
    iter_array_text,
    iter_file_text,
    order_record,
)
from shared.archive.legacy import dump_object
from shared.models.events import EventRole, Session, Track, User
from tests.support.import_helpers import unmap
from tests.support.legacy_source import load_legacy_event, read_legacy_source

EXPORTED = ("event",) + ARRAY_FILES
def export_text(db, event_id: int, file: str) -> str:
    return "".join(iter_file_text(db, event_id, file))


def expected_text(source: dict, file: str) -> str:
    """The source file in canonical key order: what a lossless round trip must give back."""
    if file == "event":
        event = dict(source["event"])
        event.pop("creator", None)  # dropped on import, as the reference did
        if "social_links" not in event and "social_links" in source:
            event["social_links"] = source["social_links"]
        return dump_object(order_record("event", event))
    return "".join(iter_array_text(order_record(file, r) for r in source.get(file, [])))


def unmapped_export(db, result, file: str) -> str:
    if file == "event":
        record = json.loads(export_text(db, result.event_id, "event"))
        return dump_object(unmap("event", record, result.id_map))
    records = json.loads(export_text(db, result.event_id, file))
    return "".join(iter_array_text(unmap(file, r, result.id_map) for r in records))


# ------------------------------------------------------------------------------------------------ round trips

LOADABLE = [
    "legacy/FOSSASIA16",
    "legacy/OTS16",
    "legacy/EhealthAfrica",
    "legacy/FOSSASIA10",
    "legacy/FOSSASIA14",
    "legacy/FOSSASIA10.zip",
    "early_2016/ots16",
    "early_2016/fossasia16",
    "early_2016/EventBriteInfo_LoklakScraper",
    "dasherized/PyCon17",
    "dasherized/OSCAL2017.zip",
    "dasherized/FOSSASIASummit2018",
]


@pytest.mark.parametrize("sample", LOADABLE)
def test_every_sample_round_trips_with_kept_ids(sample, samples_dir, sqlite_factory):
    path = samples_dir / "open_event" / sample
    source = read_legacy_source(path)
    with sqlite_factory() as db:
        result = load_legacy_event(db, path)
        db.commit()
    with sqlite_factory() as db:
        for file in EXPORTED:
            assert export_text(db, result.event_id, file) == expected_text(source, file), file


@pytest.mark.parametrize("name", ["FOSSASIA16", "OTS16"])
def test_remapped_ids_round_trip(name, samples_dir, session_factory):
    path = samples_dir / "open_event" / "legacy" / name
    source = read_legacy_source(path)
    with session_factory() as db:
        first = load_legacy_event(db, path, keep_ids=True)
        second = load_legacy_event(db, path, keep_ids=False)  # same transaction: ids must not collide
        db.commit()
    assert second.event_id != first.event_id
    assert all(old != new for old, new in second.id_map["sessions"].items())
    assert second.counts == first.counts
    with session_factory() as db:
        for file in EXPORTED:
            assert unmapped_export(db, second, file) == expected_text(source, file), file
        # Relations point at the new rows, never at the first import's.
        new_tracks = set(second.id_map["tracks"].values())
        rows = db.execute(sa.select(Session.track_id).where(Session.event_id == second.event_id)).scalars()
        assert {t for t in rows if t is not None} <= new_tracks


def test_kept_ids_advance_postgres_sequences(samples_dir, session_factory):
    with session_factory() as db:
        result = load_legacy_event(db, samples_dir / "open_event" / "legacy" / "OTS16")
        db.commit()
    with session_factory() as db:
        track = Track(event_id=result.event_id, name="new")  # an ordinary insert after an import with kept ids
        db.add(track)
        db.commit()
        assert track.id > max(result.id_map["tracks"].values())


def test_kept_ids_that_are_taken_raise(samples_dir, session_factory):
    path = samples_dir / "open_event" / "legacy" / "EhealthAfrica"
    with session_factory() as db:
        load_legacy_event(db, path)
        with pytest.raises(LoadError, match=r"^File event, ID 109: id already exists") as info:
            load_legacy_event(db, path)
        assert info.value.file == "event" and info.value.record_id == 109
        db.rollback()


# -------------------------------------------------------------------------------------------------- odd values

ODD_ARCHIVE = {
    "event": {
        "id": 7,
        "name": "Odd",
        "latitude": "1.3",
        "longitude": 52,
        "start_time": "2016-03-18T09:30:00+08:00",
        "end_time": "not a date",
        "timezone": "x" * 80,
        "identifier": "y" * 70,
        "privacy": None,
        "social_links": [{"id": 3, "link": "l", "name": "n", "extra": 1}, "junk"],
        "copyright": {"holder": "H", "year": "2016"},
        "creator": {"id": 1, "email": "admin@example.com"},
        "version": {"b": 1, "a": {"z": 1, "y": 2}},
    },
    "microlocations": [
        {"id": 1, "name": "R", "floor": "2"},
        {"id": 1, "name": "Duplicate id"},
        {"id": "x", "name": "String id"},
        {"name": "No id", "room": "\u0000nul"},
        {"id": 2, "name": "Odd numbers", "latitude": -0.0, "longitude": 1, "floor": True},
        {"id": 3, "name": "Big", "floor": 2**40, "latitude": 2**60},
    ],
    "session_types": [{"id": 1, "name": "T", "length": 0.5}, {"id": 2, "name": "T2", "length": "01:30"}],
    "tracks": [{"id": 5, "name": "Tr", "sessions": [{"id": 99, "title": "ghost"}], "color": 3}],
    "speakers": [{"id": 1, "name": "S", "organisation": "O", "sessions": []}],
    "sessions": [
        {
            "id": 11,
            "title": "A",
            "track": {"id": 5, "name": "Old name"},
            "session_type": {"id": 2, "length": 1.3, "name": "T2"},
            "speakers": [{"id": 1, "name": "S", "organisation": "O"}, {"id": 404, "name": "ghost"}, {"id": 1}],
            "microlocation": {"id": 77, "name": "nowhere"},
            "start_time": "2016-03-18 09:30:00",
            "end_time": "2016-03-18T10:00:00.5",
            "state": "accepted",
            "weird": [1, {"b": 1, "a": {"d": 1, "c": 2}}],
        },
        {"id": 10, "title": None, "track": 5, "speakers": "none", "session_type": None, "subtitle": 12},
    ],
    "sponsors": [],
    "forms": [{"id": 1, "session_form": {"x": 1}, "speaker_form": "{}"}],
}


def write_archive(folder, data: dict) -> None:
    folder.mkdir()
    for file, value in data.items():
        (folder / file).write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("keep_ids", [True, False])
def test_odd_values_round_trip(keep_ids, tmp_path, session_factory):
    folder = tmp_path / "odd"
    write_archive(folder, ODD_ARCHIVE)
    source = read_legacy_source(folder)
    with session_factory() as db:
        if not keep_ids:
            load_legacy_event(db, folder)  # occupy the archive's ids so the second load must remap
        result = load_legacy_event(db, folder, keep_ids=keep_ids)
        db.commit()
    with session_factory() as db:
        for file in EXPORTED:
            produced = unmapped_export(db, result, file) if not keep_ids else export_text(db, result.event_id, file)
            assert produced == expected_text(source, file), file
        event = json.loads(export_text(db, result.event_id, "event"))
        assert "creator" not in event


def test_odd_values_store_what_columns_can_hold(tmp_path, sqlite_factory):
    folder = tmp_path / "odd"
    write_archive(folder, ODD_ARCHIVE)
    with sqlite_factory() as db:
        result = load_legacy_event(db, folder)
        conn = db.connection()
        micro = {
            r.name: r
            for r in conn.execute(sa.text("SELECT * FROM microlocations WHERE event_id = :e"), {"e": result.event_id})
        }
        assert micro["R"].floor is None and json.loads(micro["R"].extra_fields) == {"floor": "2"}
        assert micro["Odd numbers"].floor is None  # true is not an integer
        assert micro["Big"].floor is None and micro["Big"].latitude is None
        assert micro["Duplicate id"].id not in (1, 2, 3)
        assert json.loads(micro["Duplicate id"].extra_fields) == {"id": 1}
        assert json.loads(micro["No id"].absent_fields) == ["id", "floor", "latitude", "longitude"]
        assert micro["No id"].room is None
        assert [micro[n].archive_order for n in ("R", "Duplicate id", "String id")] == [0, 1, 2]
        event = conn.execute(sa.text("SELECT * FROM events WHERE id = :e"), {"e": result.event_id}).one()
        assert event.timezone is None and event.identifier is None and event.latitude is None
        assert event.longitude == 52.0
        links = conn.execute(sa.text("SELECT * FROM session_speakers ORDER BY position")).all()
        assert [(r.session_id, r.speaker_id, r.position) for r in links] == [(11, 1, 0)]
        session = conn.execute(sa.text("SELECT * FROM sessions WHERE id = 11")).one()
        assert session.track_id == 5 and session.session_type_id == 2 and session.microlocation_id is None
        db.rollback()


def test_records_made_on_the_platform_keep_null_bookkeeping(samples_dir, sqlite_factory):
    with sqlite_factory() as db:
        result = load_legacy_event(db, samples_dir / "open_event" / "legacy" / "OTS16")
        conn = db.connection()
        # Types and sponsors match their derived form exactly: SQL NULL, not JSON null.
        nulls = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM session_types WHERE event_id = :e AND extra_fields IS NULL "
                "AND absent_fields IS NULL"
            ),
            {"e": result.event_id},
        ).scalar()
        assert nulls == result.counts["session_types"] == 29
        db.rollback()


# ------------------------------------------------------------------------------------------------ archive forms


def test_zip_and_folder_load_the_same(samples_dir, sqlite_factory, tmp_path):
    legacy = samples_dir / "open_event" / "legacy"
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(legacy / "FOSSASIA14.zip") as src, zipfile.ZipFile(nested, "w") as dst:
        for info in src.infolist():
            if not info.is_dir():
                dst.writestr("FOSSASIA14/" + info.filename, src.read(info))  # packed with a top-level folder
    with sqlite_factory() as db:
        texts = []
        for path in (legacy / "FOSSASIA14", legacy / "FOSSASIA14.zip", nested):
            result = load_legacy_event(db, path, keep_ids=False)
            texts.append([unmapped_export(db, result, f) for f in EXPORTED])
        assert texts[0] == texts[1] == texts[2]
        db.rollback()


def test_2016_layout_merges_social_links_and_custom_forms(samples_dir, sqlite_factory):
    with sqlite_factory() as db:
        result = load_legacy_event(db, samples_dir / "open_event" / "early_2016" / "ots16")
        event = json.loads(export_text(db, result.event_id, "event"))
        assert [link["name"] for link in event["social_links"]][:2] == ["Twitter", "Github"]
        assert result.counts["forms"] == 1 and result.counts["social_links"] == len(event["social_links"])
        assert "creator" not in event
        db.rollback()


@pytest.mark.parametrize(("sample", "file"), [("FOSSASIA11", "sessions"), ("FOSSASIA15", "microlocations")])
def test_invalid_json_names_the_file(sample, file, samples_dir):
    with pytest.raises(LoadError, match=rf"^File {file}: invalid JSON") as info:
        read_legacy_source(samples_dir / "open_event" / "legacy" / sample)
    assert info.value.file == file


def test_structural_errors(tmp_path, sqlite_factory):
    with pytest.raises(LoadError, match="^File event: missing"):
        read_legacy_source(tmp_path)
    with pytest.raises(LoadError, match="archive not found"):
        read_legacy_source(tmp_path / "nope")
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(LoadError, match="not a readable zip"):
        read_legacy_source(bad_zip)
    for data, pattern in [
        ({"event": [1]}, "^File event: expected a JSON object"),
        ({"event": {"id": 1}, "sessions": {"id": 1}}, "^File sessions: expected a JSON array"),
        ({"event": {"id": 1}, "tracks": [{"id": 1}, 2]}, "^File tracks: record 1 is not a JSON object"),
    ]:
        folder = tmp_path / f"case{len(pattern)}"
        write_archive(folder, data)
        with sqlite_factory() as db, pytest.raises(LoadError, match=pattern):
            load_legacy_event(db, folder)
    nan = tmp_path / "nan"
    nan.mkdir()
    (nan / "event").write_text('{"id": 1, "latitude": NaN}')
    with pytest.raises(LoadError, match="^File event: invalid JSON"):
        read_legacy_source(nan)


def test_owner_role_and_caller_owned_transaction(samples_dir, sqlite_factory):
    with sqlite_factory() as db:
        user = User(email="o@example.com", password_hash="x")
        db.add(user)
        db.commit()
        result = load_legacy_event(db, samples_dir / "open_event" / "legacy" / "EhealthAfrica", owner_user_id=user.id)
        roles = db.execute(sa.select(EventRole.role).where(EventRole.event_id == result.event_id)).scalars().all()
        assert roles == ["organizer"]
        db.rollback()  # nothing was committed by the loader
        assert db.execute(sa.text("SELECT COUNT(*) FROM events")).scalar() == 0


def test_identifier_is_kept_unless_taken(tmp_path, session_factory):
    folder = tmp_path / "ident"
    write_archive(folder, {"event": {"id": 3, "name": "E", "identifier": "e2016"}})
    with session_factory() as db:
        first = load_legacy_event(db, folder, keep_ids=False)
        second = load_legacy_event(db, folder, keep_ids=False)
        identifiers = dict(db.execute(sa.text("SELECT id, identifier FROM events")).all())
        assert identifiers == {first.event_id: "e2016", second.event_id: None}
        # Both still export the archive's identifier (the second through its extras).
        for result in (first, second):
            assert json.loads(export_text(db, result.event_id, "event"))["identifier"] == "e2016"
        db.rollback()
