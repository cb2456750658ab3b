"""Archive reader: every sample variant opens and validates, legacy records come out exactly as parsed, the other
variants come out legacy-shaped (keys, relations, datetimes), media are located and sniffed, memory stays flat."""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from shared.archive import legacy
from shared.archive.legacy import ARRAY_FILES
from shared.archive.media import identify, sniff
from shared.archive.reader import ArchiveError, ArchiveLimits, open_archive, validate_archive
from shared.archive.safezip import LimitedReader
from shared.archive.variants import DATA_FILES, Normalizer, length_text
from tests.support.hostile_archives import base_files, encode, write_zip

OE = "open_event"
# Every sample folder and zip, with the variant it must be read as.
SAMPLES = {
    "legacy/EhealthAfrica": "legacy",
    "legacy/EhealthAfrica.zip": "legacy",
    "legacy/FOSSASIA10": "legacy",
    "legacy/FOSSASIA10.zip": "legacy",
    "legacy/FOSSASIA14": "legacy",
    "legacy/FOSSASIA14.zip": "legacy",
    "legacy/FOSSASIA16": "legacy",
    "legacy/OTS16": "legacy",
    "early_2016/EventBriteInfo_LoklakScraper": "early_2016",
    "early_2016/fossasia16": "early_2016",
    "early_2016/ots16": "early_2016",
    "dasherized/FOSSASIASummit2016": "dasherized",
    "dasherized/FOSSASIASummit2018": "dasherized",
    "dasherized/FOSSASIASummit2018.zip": "dasherized",
    "dasherized/GoogleIO17": "dasherized",
    "dasherized/MozillaAllHands17": "dasherized",
    "dasherized/MozillaAllHands17.zip": "dasherized",
    "dasherized/OSCAL2017": "dasherized",
    "dasherized/OSCAL2017.zip": "dasherized",
    "dasherized/OTS16": "dasherized",
    "dasherized/OpenTechSummit2018": "dasherized",
    "dasherized/OpenTechSummit2018.zip": "dasherized",
    "dasherized/PyCon17": "dasherized",
}
INVALID = ["legacy/FOSSASIA11", "legacy/FOSSASIA15", "legacy/FOSSASIA11/FOSSASIA11.zip"]
LEGACY = [name for name, variant in SAMPLES.items() if variant == "legacy"]


def sample(samples_dir: Path, name: str) -> Path:
    return samples_dir / OE / name


def parsed_files(path: Path) -> dict[str, object]:
    """The data files of a sample, parsed with json (independently of the reader), by canonical name."""
    if path.is_dir():
        names = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    else:
        with zipfile.ZipFile(path) as zf:
            names = {n: zf.read(n) for n in zf.namelist() if "/" not in n}
    out = {}
    for canonical, candidates in DATA_FILES.items():
        for candidate in candidates:
            if candidate in names:
                out[canonical] = json.loads(names[candidate].decode("utf-8-sig"))
                break
    return out


def expected_counts(files: dict[str, object]) -> dict[str, int]:
    """What the files hold: exact copies count once; sessions' relations to records their file lacks add one each."""
    counts = {}
    for file in ARRAY_FILES:
        records = files.get(file) or []
        counts[file] = len({json.dumps(r, sort_keys=True) for r in records})
    sessions = files.get("sessions") or []
    for keys, file in ((("session_type", "session-type"), "session_types"), (("track",), "tracks"),
                       (("microlocation",), "microlocations")):
        held = {int(r["id"]) for r in files.get(file) or []}
        referenced = set()
        for session in sessions:
            for key in keys:
                ref = session.get(key)
                if isinstance(ref, dict) and ref.get("id") not in (None, ""):
                    referenced.add(int(ref["id"]))
        counts[file] += len(referenced - held)
    return counts


# ----------------------------------------------------------------------------------------------------- samples


def test_sample_list_is_complete(samples_dir):
    found = set()
    for variant_dir in (samples_dir / OE).iterdir():
        for entry in variant_dir.iterdir():
            found.add(f"{variant_dir.name}/{entry.name}")
    assert found == set(SAMPLES) | {"legacy/FOSSASIA11", "legacy/FOSSASIA15"}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_opens_and_validates(samples_dir, name):
    path = sample(samples_dir, name)
    files = parsed_files(path)
    with open_archive(path) as archive:
        assert archive.variant == SAMPLES[name]
        counts = validate_archive(archive)
        assert list(counts) == ["event", "social_links", *ARRAY_FILES]
        assert {f: counts[f] for f in ARRAY_FILES} == expected_counts(files)
        for file in ARRAY_FILES:
            records = list(archive.records(file))
            assert len(records) == counts[file] == archive.count(file)
            assert len({r["id"] for r in records}) == len(records), f"{file}: ids must be unique once read"
        links = archive.event().get("social_links") or []
        assert counts["social_links"] == len(links)
        for warning in archive.warnings:
            extra = {"given", "chosen"} if warning["code"] == "relation_conflict" else set()
            assert set(warning) == {"code", "message", "file", "record_id", "field", *extra}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_json_samples_fail_naming_the_file(samples_dir, name):
    path = sample(samples_dir, name)
    broken = set()
    if path.is_dir():
        for member in path.iterdir():
            if member.is_file() and member.suffix != ".zip":
                try:
                    json.loads(member.read_bytes())
                except ValueError:
                    broken.add(member.name)
    else:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if "/" not in member:
                    try:
                        json.loads(zf.read(member))
                    except ValueError:
                        broken.add(member)
    assert broken
    with pytest.raises(ArchiveError) as raised:
        with open_archive(path) as archive:
            validate_archive(archive)
    error = raised.value
    assert error.code == "invalid_json"
    assert error.file in broken
    assert error.message.startswith(f"File {error.file}: invalid JSON")
    assert error.to_dict() == {"code": "invalid_json", "message": error.message, "file": error.file,
                               "record_id": None, "field": None}


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_records_are_yielded_exactly_as_parsed(samples_dir, name):
    path = sample(samples_dir, name)
    files = parsed_files(path)
    with open_archive(path) as archive:
        validate_archive(archive)
        # Same keys, same order, same values and types: compare the serializations.
        assert json.dumps(archive.event()) == json.dumps(files["event"])
        assert archive.meta() == files["meta"]
        for file in ARRAY_FILES:
            assert json.dumps(list(archive.records(file))) == json.dumps(files.get(file, []))
        # Re-iterable: every call streams the member again.
        first, second = archive.records("sessions"), archive.records("sessions")
        assert first is not second
        assert list(first) == list(second) == files["sessions"]
        assert archive.warnings == [] or {w["code"] for w in archive.warnings} == {"unknown_timezone"}


def test_duplicate_json_keys_last_wins_like_json_load(samples_dir):
    # FOSSASIA16's speakers carry a duplicated "website" key.
    raw = sample(samples_dir, "legacy/FOSSASIA16/speakers").read_text(encoding="utf-8")
    assert raw.count('"website"') > len(json.loads(raw))
    with open_archive(sample(samples_dir, "legacy/FOSSASIA16")) as archive:
        for mine, theirs in zip(archive.records("speakers"), json.loads(raw), strict=True):
            assert list(mine.items()) == list(theirs.items())


def test_dasherized_datetimes_become_event_local_wall_time(samples_dir):
    with open_archive(sample(samples_dir, "dasherized/GoogleIO17")) as archive:
        event = archive.event()
        assert (event["start_time"], event["end_time"]) == ("2017-05-17T10:00:00", "2017-05-19T17:00:00")
        first = next(r for r in archive.records("sessions") if r["id"] == 1001)
        assert (first["start_time"], first["end_time"]) == ("2017-05-17T15:00:00", "2017-05-17T16:00:00")
    with open_archive(sample(samples_dir, "dasherized/FOSSASIASummit2018.zip")) as archive:
        # Microseconds dropped, offset applied (+08:00 is Singapore's own offset).
        assert archive.event()["schedule_published_on"] == "2018-02-26T09:13:28"
    # The same event in both eras: the dasherized times, converted, equal the legacy golden ones.
    with open_archive(sample(samples_dir, "dasherized/FOSSASIASummit2016")) as new, \
            open_archive(sample(samples_dir, "legacy/FOSSASIA16")) as old:
        golden = {s["id"]: (s["start_time"], s["end_time"]) for s in old.records("sessions")}
        converted = {s["id"]: (s["start_time"], s["end_time"]) for s in new.records("sessions")}
        assert len(converted) == 491 and all(golden[i] == times for i, times in converted.items())
        # call_for_papers carries its own zone (UTC): its dates are read in that zone, as the legacy file has them.
        assert new.event()["call_for_papers"] == old.event()["call_for_papers"]
        assert new.event()["copyright"] == old.event()["copyright"]


def test_offsets_convert_across_zones_and_dst():
    norm = Normalizer("dasherized")
    norm.event({"name": "x", "timezone": "Europe/Berlin"})
    assert norm.datetime_text("2024-03-31T00:30:00+00:00") == "2024-03-31T01:30:00"  # CET
    assert norm.datetime_text("2024-03-31T01:30:00Z") == "2024-03-31T03:30:00"  # CEST, after the switch
    assert norm.datetime_text("2024-10-27T00:30:00+00:00") == "2024-10-27T02:30:00"  # first 02:30 (CEST)
    assert norm.datetime_text("2024-10-27T01:30:00+00:00") == "2024-10-27T02:30:00"  # second 02:30 (CET)
    assert norm.datetime_text("2017-05-17T10:00:00-0700") == "2017-05-17T19:00:00"
    assert norm.datetime_text("2016-05-05 07:30:00") == "2016-05-05T07:30:00"  # early 2016: no offset, space
    assert norm.datetime_text("2016-05-05T07:30") == "2016-05-05T07:30:00"
    assert norm.datetime_text("not a date") is None
    assert norm.datetime_text("2024-02-30T10:00:00+01:00") is None
    bare = Normalizer("dasherized")
    bare.event({"name": "x"})  # no zone: the wall time as written is kept, and that is noted
    assert bare.datetime_text("2024-05-01T09:00:00+05:30") == "2024-05-01T09:00:00"
    assert bare.offset_without_zone


def test_dasherized_keys_map_to_legacy_names(samples_dir):
    with open_archive(sample(samples_dir, "dasherized/PyCon17")) as archive:
        validate_archive(archive)
        event = archive.event()
        assert {"start_time", "end_time", "logo", "background_image", "event_url", "copyright",
                "has_session_speakers", "social_links"} <= set(event)
        assert event["copyright"]["logo"] == "http://i.creativecommons.org/p/zero/1.0/88x31.png"
        assert set(archive.meta()) == {"root_url"}  # "root-url" in the file
        for file in ARRAY_FILES:
            for record in archive.records(file):
                assert not [k for k in record if "-" in k], (file, record["id"])
        sponsor = next(iter(archive.records("sponsors")))
        assert "sponsor_type" in sponsor and "logo" in sponsor and "type" not in sponsor
        speaker = next(iter(archive.records("speakers")))
        assert speaker["photo"].startswith("/images/speakers/") and "featured" in speaker
        session = next(iter(archive.records("sessions")))
        assert {"slides", "audio", "video", "start_time", "end_time", "session_type"} <= set(session)
        assert session["microlocation"]["id"] == 3  # "3" in the file
        assert session["session_type"] is None  # {} in the file
        assert {w["code"] for w in archive.warnings} >= {"empty_relation", "id_reassigned"}


def test_hand_made_duplicates_are_told_apart_by_name_and_back_reference(samples_dir):
    # PyCon17 reuses speaker ids 78, 88, 400 and session id 402 for different records.
    with open_archive(sample(samples_dir, "dasherized/PyCon17")) as archive:
        validate_archive(archive)
        speakers = {s["name"]: s["id"] for s in archive.records("speakers")}
        sessions = {s["id"]: s for s in archive.records("sessions")}
        assert speakers["Jiaqi Liu"] == 78 and speakers["Eleanor Stribling"] not in (78, None)
        assert [x["id"] for x in sessions[64]["speakers"]] == [78]
        assert [x["id"] for x in sessions[65]["speakers"]] == [speakers["Eleanor Stribling"]]
        assert speakers["Glyph"] == 88 and [x["id"] for x in sessions[77]["speakers"]] == [
            speakers["Michele Pratusevich"]]
        # Two sessions 402: the one listing speakers 139 and 18 keeps the id; the speakers' back references follow.
        assert [x["id"] for x in sessions[402]["speakers"]] == [139, 18]
        copies = [s for s in sessions.values() if s["title"] == "Python Education Summit"]
        assert len(copies) == 2
        by_id = {s["id"]: s for s in archive.records("speakers")}
        assert {x["id"] for x in by_id[18]["sessions"]} >= {402}


def test_missing_related_files_are_rebuilt_from_session_snapshots(samples_dir):
    with open_archive(sample(samples_dir, "dasherized/OTS16")) as archive:
        counts = validate_archive(archive)
        assert "session_types" not in archive.files
        types = {t["id"]: t for t in archive.records("session_types")}
        assert counts["session_types"] == len(types) == 29
        assert types[1] == {"id": 1, "length": "00:30", "name": "Ganztägiger Lötworkshop / Soldering Workshop"}
        codes = [w["code"] for w in archive.warnings]
        assert "synthesized_records" in codes


def test_early_2016_layout(samples_dir):
    with open_archive(sample(samples_dir, "early_2016/ots16")) as archive:
        counts = validate_archive(archive)
        assert archive.files["forms"].endswith("custom_forms.json")
        assert counts["forms"] == 1 and counts["social_links"] == 6
        event = archive.event()
        assert event["start_time"] == "2016-05-05T09:00:00"
        assert event["background_image"].startswith("http://2016.opentechsummit.net/")
        assert "background_url" not in event
        assert next(iter(archive.records("session_types")))["length"] == "00:30"
    with open_archive(sample(samples_dir, "early_2016/EventBriteInfo_LoklakScraper")) as archive:
        validate_archive(archive)
        event = archive.event()
        assert event["id"] == 25740798421 and [link["id"] for link in event["social_links"]] == [1, 2]
        assert [w["code"] for w in archive.warnings] == ["id_out_of_range"]


def test_single_top_level_folder_is_tolerated(samples_dir, tmp_path):
    source = sample(samples_dir, "legacy/FOSSASIA10.zip")
    wrapped = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(wrapped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not info.is_dir():
                dst.writestr("FOSSASIA10/" + info.filename, src.read(info))
        dst.writestr("__MACOSX/FOSSASIA10/._event", b"\x00\x05\x16\x07")
    with open_archive(source) as flat, open_archive(wrapped) as nested:
        assert validate_archive(flat) == validate_archive(nested)
        assert list(flat.records("sessions")) == list(nested.records("sessions"))
        photo = next(iter(nested.records("speakers")))["photo"]
        assert nested.media_member(photo) == "FOSSASIA10/" + photo.lstrip("/")


def test_validation_reports_progress(samples_dir):
    seen = []
    with open_archive(sample(samples_dir, "legacy/FOSSASIA16")) as archive:
        validate_archive(archive, lambda stage, done, total: seen.append((stage, done, total)))
    assert ("index:sessions", 493, 493) in seen
    assert ("validate:sessions", 493, 493) in seen
    assert seen[-1][0] == "validate:sessions"


# -------------------------------------------------------------------------------------------------- raw column


def raw_column_files() -> dict[str, object]:
    """The later server's raw-column export, built from FORMAT.md: flat *_id, table column names, UTC offsets."""
    return {
        "event": {
            "id": 7, "name": "Raw Conf",
            "starts_at": "2018-03-22T01:30:00+00:00", "ends_at": "2018-03-25T11:00:00+00:00",
            "timezone": "Asia/Singapore", "original_image_url": "https://example.org/bg.jpg",
            "logo_url": "/images/logo.png",
            "owner_name": "Org", "owner_description": "About", "external_event_url": "https://example.org",
            "event_type_id": 3, "event_topic_id": None, "deleted_at": None,
            "schedule_published_on": "2018-02-26 01:13:28.187481+00:00",
        },
        "microlocations": [{"id": 11, "name": "Hall", "floor": 0, "event_id": 7}],
        "tracks": [{"id": 21, "name": "Web", "color": "#fff", "font_color": "#000", "event_id": 7}],
        "session_types": [{"id": 31, "name": "Talk", "length": "00:25", "event_id": 7}],
        "speakers": [{"id": 41, "name": "Ada", "photo_url": "https://example.org/ada.jpg", "user_id": 5,
                      "event_id": 7, "created_at": "2018-01-01T10:00:00+00:00"}],
        "sponsors": [{"id": 51, "name": "Acme", "logo_url": None, "type": "Gold", "level": 1, "event_id": 7}],
        "forms": [{"id": 61, "form": "session", "field_identifier": "title", "type": "text", "is_required": True,
                   "event_id": 7}],
        "sessions": [
            {"id": 71, "title": "Opening",
             "starts_at": "2018-03-22T01:30:00+00:00", "ends_at": "2018-03-22T02:00:00+00:00",
             "session_type_id": 31, "track_id": 21, "microlocation_id": 11, "slides_url": None,
             "audio_url": None, "video_url": "https://example.org/v.mp4", "event_id": 7, "creator_id": 5,
             "state": "accepted", "submitted_at": None},
            {"id": 72, "title": "Closing", "starts_at": "2018-03-25T10:00:00+00:00", "ends_at": None,
             "session_type_id": None, "track_id": None, "microlocation_id": None, "event_id": 7},
        ],
        "meta": {"root_url": "https://example.org/"},
    }


def test_raw_column_archive(tmp_path):
    path = write_zip(tmp_path / "raw.zip", encode(raw_column_files()))
    with open_archive(path) as archive:
        assert archive.variant == "raw_column"
        counts = validate_archive(archive)
        assert counts == {"event": 1, "social_links": 0, "microlocations": 1, "sessions": 2, "speakers": 1,
                          "sponsors": 1, "tracks": 1, "session_types": 1, "forms": 1}
        event = archive.event()
        assert event["start_time"] == "2018-03-22T09:30:00" and event["end_time"] == "2018-03-25T19:00:00"
        assert event["schedule_published_on"] == "2018-02-26T09:13:28"
        assert (event["background_image"], event["logo"], event["organizer_name"], event["event_url"]) == (
            "https://example.org/bg.jpg", "/images/logo.png", "Org", "https://example.org")
        assert event["event_type_id"] == 3  # unknown keys are kept
        opening, closing = archive.records("sessions")
        assert opening["track"] == {"id": 21, "name": "Web"}
        assert opening["session_type"] == {"id": 31, "length": 0.25, "name": "Talk"}
        assert opening["microlocation"] == {"id": 11, "name": "Hall"}
        assert opening["speakers"] == [] and "track_id" not in opening
        assert (opening["start_time"], opening["end_time"]) == ("2018-03-22T09:30:00", "2018-03-22T10:00:00")
        assert opening["video"] == "https://example.org/v.mp4" and opening["creator_id"] == 5
        assert closing["track"] is None and closing["session_type"] is None and closing["end_time"] is None
        speaker = next(iter(archive.records("speakers")))
        assert speaker["photo"] == "https://example.org/ada.jpg" and speaker["created_at"] == "2018-01-01T18:00:00"
        sponsor = next(iter(archive.records("sponsors")))
        assert sponsor["sponsor_type"] == "Gold" and "logo" in sponsor


def test_raw_column_unknown_track_is_an_error(tmp_path):
    files = raw_column_files()
    files["sessions"][1]["track_id"] = 99
    path = write_zip(tmp_path / "raw.zip", encode(files))
    with open_archive(path) as archive, pytest.raises(ArchiveError) as raised:
        validate_archive(archive)
    assert raised.value.to_dict() == {
        "code": "unknown_reference", "message": "File sessions, ID 72: track 99 does not exist",
        "file": "sessions", "record_id": 72, "field": "track",
    }


# --------------------------------------------------------------------------------------------------- synthetic


def test_records_before_validation_and_json_parity(tmp_path):
    files = encode(base_files())
    # A BOM, a duplicated key (last wins, first position) and a float that must stay a float.
    files["tracks"] = b'\xef\xbb\xbf[{"id": 1, "name": "Old", "color": "#000", "name": "Main", "x": 1.0}]'
    path = write_zip(tmp_path / "a.zip", files)
    with open_archive(path) as archive:
        (track,) = archive.records("tracks")
        assert list(track.items()) == list(json.loads(files["tracks"].decode("utf-8-sig"))[0].items())
        assert type(track["x"]) is float
        validate_archive(archive)


def test_identical_duplicates_are_skipped_and_dangling_back_references_warned(tmp_path):
    files = base_files()
    files["microlocations"].append(dict(files["microlocations"][0]))
    files["speakers"][0]["sessions"].append({"id": 99, "title": "Gone"})
    path = write_zip(tmp_path / "a.zip", encode(files))
    with open_archive(path) as archive:
        counts = validate_archive(archive)
        assert counts["microlocations"] == 1
        codes = {w["code"]: w for w in archive.warnings}
        assert codes["duplicate_record"]["file"] == "microlocations"
        assert codes["dangling_reference"]["message"] == (
            "File speakers, ID 1: sessions lists session 99, which does not exist")
        # Legacy records stay as they are (the round trip needs the stale entry).
        assert next(iter(archive.records("speakers")))["sessions"][-1] == {"id": 99, "title": "Gone"}


def test_meta_checksums_of_our_exports_are_verified(tmp_path):
    import hashlib

    files = encode(base_files())
    meta = {"root_url": "x", "files": {name: {"count": 2 if name == "sessions" else 1,
                                              "sha256": hashlib.sha256(data).hexdigest()}
                                       for name, data in files.items() if name != "meta"}}
    files["meta"] = json.dumps(meta).encode()
    with open_archive(write_zip(tmp_path / "ok.zip", files)) as archive:
        validate_archive(archive)
        assert archive.warnings == [{"code": "count_mismatch", "message": "File speakers: holds 2 records, meta says 1",
                                     "file": "speakers", "record_id": None, "field": None}]
    files["tracks"] = files["tracks"].replace(b"Main", b"Mian")
    with open_archive(write_zip(tmp_path / "edited.zip", files)) as archive:
        validate_archive(archive)
        assert "checksum_mismatch" in {w["code"] for w in archive.warnings if w["file"] == "tracks"}


def test_validate_is_idempotent_and_warnings_are_capped(tmp_path):
    files = base_files()
    files["speakers"][0]["sessions"] = [{"id": 1000 + i, "title": "x"} for i in range(500)]
    with open_archive(write_zip(tmp_path / "a.zip", encode(files))) as archive:
        first = validate_archive(archive)
        assert validate_archive(archive) == first
        # 50 of the same kind are listed, then one line sums up the rest; all are counted.
        assert archive.warnings_total == 500 and len(archive.warnings) == 51
        assert archive.warnings[-1]["code"] == "more_warnings"
        assert archive.warnings[-1]["message"] == ("File speakers: 450 more dangling_reference warnings like the "
                                                   "ones above are not listed (500 in all)")


def test_fifty_thousand_sessions_validate_with_bounded_memory(tmp_path):
    path = tmp_path / "big.zip"
    sessions = 50_000

    def session(i: int) -> dict:
        return {
            "id": i, "title": f"Session {i}", "subtitle": None, "short_abstract": "Short abstract",
            "long_abstract": "A long abstract that makes the record look like a real one. " * 6,
            "start_time": "2024-05-01T09:00:00", "end_time": "2024-05-01T09:30:00",
            "session_type": {"id": 1 + i % 5, "length": 0.3, "name": f"Type {1 + i % 5}"},
            "track": {"id": 1 + i % 20, "name": f"Track {1 + i % 20}"}, "comments": "", "language": None,
            "slides": None, "audio": None, "video": None,
            "microlocation": {"id": 1 + i % 30, "name": f"Room {1 + i % 30}"}, "signup_url": None,
            "speakers": [{"id": 1 + i % 5000, "name": f"Speaker {1 + i % 5000}", "organisation": "Org"}],
            "state": "accepted",
        }

    json_bytes = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("event", json.dumps({"id": 1, "name": "Big", "timezone": "UTC"}))
        zf.writestr("session_types", json.dumps([{"id": i, "name": f"T{i}", "length": "00:30"} for i in range(1, 6)]))
        zf.writestr("tracks", json.dumps([{"id": i, "name": f"Track {i}"} for i in range(1, 21)]))
        zf.writestr("microlocations", json.dumps([{"id": i, "name": f"Room {i}"} for i in range(1, 31)]))
        zf.writestr("speakers", json.dumps([{"id": i, "name": f"Speaker {i}", "organisation": "Org"}
                                            for i in range(1, 5001)]))
        with zf.open("sessions", "w") as out:  # streamed: the test itself must not hold the file either
            for chunk in legacy.iter_array_text(session(i) for i in range(1, sessions + 1)):
                data = chunk.encode()
                json_bytes += len(data)
                out.write(data)
    assert json_bytes > 40 * 2**20

    tracemalloc.start()
    try:
        with open_archive(path) as archive:
            counts = validate_archive(archive)
            last = None
            for record in archive.records("sessions"):  # the importer's write pass
                last = record
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["sessions"] == sessions and last["id"] == sessions
    assert peak < json_bytes / 8, f"peak {peak} bytes for {json_bytes} bytes of JSON"


# ------------------------------------------------------------------------------------------------------- media


def test_media_references_are_classified(samples_dir, tmp_path):
    with open_archive(sample(samples_dir, "legacy/OTS16")) as archive:
        sessions = {s["id"]: s for s in archive.records("sessions")}
        audio = archive.media_ref(sessions[44]["audio"])
        assert (audio.kind, audio.member) == ("member", "audio/session_44.mp3")
        assert archive.media_ref(sessions[40]["audio"]).kind == "absent"  # audio/session_40.mp3 is not there
        speakers = {s["id"]: s for s in archive.records("speakers")}
        photo = archive.media_ref(speakers[1]["photo"])
        assert (photo.kind, photo.member) == ("member", "images/speakers/MitchAltman_1.jpg")
        assert archive.media_member("/images/speakers/HongPhucDang_32.jpg") == "images/speakers/HongPhucDang_32.jpg"
        assert archive.media_ref(None).kind == "none" and archive.media_ref("").kind == "none"
        assert archive.media_ref("https://example.org/a.jpg").kind == "url"
        for hostile in ("/../../etc/passwd", "../event", "file:///etc/passwd", "javascript:alert(1)", "//evil/x.jpg",
                        "C:\\Windows\\a.jpg", "/event", "/sessions"):
            ref = archive.media_ref(hostile)
            assert ref.kind == "absent" and ref.member is None, hostile
        refs = archive.media_refs("sessions", sessions[44])
        assert set(refs) == {"slides", "audio", "video"} and refs["video"].kind == "url"
    with open_archive(sample(samples_dir, "early_2016/ots16")) as archive:
        # A member literally named with %20, and percent-decoding as a fallback.
        assert archive.media_member("/images/sponsors/CWA%20Logo%202016%20_S_White.png")
        assert archive.media_member("/images/speakers/Hong%20Phuc_Dang.jpg") == "images/speakers/Hong Phuc_Dang.jpg"


def test_error_page_saved_as_audio_is_not_media(samples_dir):
    with open_archive(sample(samples_dir, "legacy/OTS16")) as archive:
        reason = archive.sniff_media("audio/session_44.mp3", "audio")
        assert reason == "an XML document, not audio (an error page saved as media?)"
        assert archive.sniff_media("audio/session_37.mp3", "audio") is None
        assert archive.sniff_media("images/speakers/MitchAltman_1.jpg", "photo") is None
        assert archive.sniff_media("audio/session_37.mp3", "photo") == "MPEG audio (MP3), not an image"
        with archive.open_media("audio/session_37.mp3") as stream:
            assert stream.read(1) == b"\xff" and len(stream.read()) > 1000
        with pytest.raises(ArchiveError) as raised:
            archive.open_media("sessions")  # data files are not media
        assert raised.value.code == "not_found"


@pytest.mark.parametrize(
    ("head", "kind", "ok"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image", True),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image", True),
        (b"GIF89a\x01\x00", "image", True),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image", True),
        # SVG can carry scripts: never accepted as an image (issue 9.13)
        (b'<?xml version="1.0"?>\n<!-- made by hand -->\n<svg xmlns="http://www.w3.org/2000/svg"/>', "image", False),
        (b"<svg width='10'></svg>", "image", False),
        (b"%PDF-1.4\n", "document", True),
        (b"PK\x03\x04\x14\x00", "document", True),
        (b"\x89PNG\r\n\x1a\n", "document", True),
        (b"ID3\x03\x00", "audio", True),
        (b"\xff\xfb\x90\x64", "audio", True),
        (b"OggS\x00\x02", "audio", True),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio", True),
        (b"\x00\x00\x00\x20ftypM4A \x00", "audio", True),
        (b"\x00\x00\x00\x20ftypisom\x00", "video", True),
        (b"\x1aE\xdf\xa3\x9f", "video", True),
        (b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>", "audio", False),
        (b"<!DOCTYPE html><html><body>404</body></html>", "image", False),
        (b"<html><head><title>Error</title>", "video", False),
        (b'{"error": "not found"}', "document", False),
        (b"Not Found", "audio", False),
        (b"", "image", False),
        (b"\x00\x01\x02\x03\x04\x05garbage\x99\x98", "image", False),
        (b"%PDF-1.4", "image", False),
        (b"ID3\x03\x00", "video", False),
    ],
)
def test_sniffing(head, kind, ok):
    reason = sniff(head, kind)
    assert (reason is None) is ok, (head, kind, reason, identify(head))


def test_limited_reader_enforces_limits_while_reading():
    big = io.BytesIO(b"\x00" * (3 * 2**20))
    reader = LimitedReader(big, label="x", limit=2**20, compressed=None, max_ratio=200)
    with pytest.raises(ArchiveError) as raised:
        reader.read()
    assert raised.value.code == "member_too_large"
    reader = LimitedReader(io.BytesIO(b"\x00" * (3 * 2**20)), label="images/a.png", limit=2**30, compressed=10_000,
                           max_ratio=200)
    with pytest.raises(ArchiveError) as raised:
        while reader.read(65536):
            pass
    assert raised.value.code == "compression_ratio" and raised.value.file == "images/a.png"


def test_session_type_length_conversions():
    assert length_text(0.3) == "00:30" and length_text(1.3) == "01:30" and length_text(0.45) == "00:45"
    assert length_text(0.75) == 0.75 and length_text("00:30") == "00:30" and length_text(None) is None


def test_folder_and_zip_of_the_same_sample_agree(samples_dir, tmp_path):
    copy_dir = tmp_path / "FOSSASIA14"
    shutil.copytree(sample(samples_dir, "legacy/FOSSASIA14"), copy_dir)
    with open_archive(copy_dir) as folder, open_archive(sample(samples_dir, "legacy/FOSSASIA14.zip")) as zipped:
        assert validate_archive(folder) == validate_archive(zipped)
        for file in ARRAY_FILES:
            assert list(folder.records(file)) == list(zipped.records(file))


def test_limits_are_configurable(tmp_path):
    path = write_zip(tmp_path / "a.zip", encode(base_files()))
    with pytest.raises(ArchiveError) as raised:
        open_archive(path, ArchiveLimits(max_members=3))
    assert raised.value.code == "too_many_members"
    with pytest.raises(ArchiveError) as raised:
        open_archive(path, ArchiveLimits(max_archive_bytes=100))
    assert raised.value.code == "archive_too_large"


# --------------------------------------------------------------------------------------------- golden round trip


@pytest.mark.parametrize("name", ["legacy/FOSSASIA16", "legacy/OTS16", "legacy/EhealthAfrica.zip", "legacy/FOSSASIA14"])
def test_legacy_archives_round_trip_through_the_reader(name, samples_dir, sqlite_url):
    """Records as the reader yields them, loaded by the existing loader and exported again: the source files in
    canonical form (the loader tests' criterion: key order and separators of the format, values untouched)."""
    from shared.archive import iter_file_text
    from shared.db import make_engine, make_session_factory, upgrade_to_head
    from tests.support.legacy_source import load_legacy_data

    upgrade_to_head(sqlite_url)
    engine = make_engine(sqlite_url)
    path = sample(samples_dir, name)
    with open_archive(path) as archive:
        validate_archive(archive)
        data = {"event": archive.event(), **{file: list(archive.records(file)) for file in ARRAY_FILES}}
    source = parsed_files(path)  # parsed independently of the reader
    try:
        factory = make_session_factory(engine)
        with factory() as db:
            result = load_legacy_data(db, data)
            db.commit()
        with factory() as db:
            assert "".join(iter_file_text(db, result.event_id, "event")) == legacy.dump_object(
                legacy.order_record("event", source["event"]))
            for file in ARRAY_FILES:
                expected = "".join(legacy.iter_array_text(legacy.order_record(file, r) for r in source[file]))
                assert "".join(iter_file_text(db, result.event_id, file)) == expected, file
    finally:
        engine.dispose()
