"""Pure format rules of the legacy archive: key order, serialization, slugs, media paths, datetimes."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from shared.archive import legacy


def py2_dumps(value):
    """What the legacy server (Python 2 json, indent=4) wrote."""
    return json.dumps(value, indent=4, ensure_ascii=False, separators=(", ", ": "))


# ------------------------------------------------------------------------------------------------------------ files


def test_files_and_leading_fields():
    # The order the legacy server wrote its members in.
    assert legacy.FILES == ("event", "microlocations", "sessions", "speakers", "sponsors", "tracks", "session_types",
                            "forms", "meta")
    assert legacy.ARRAY_FILES == legacy.FILES[1:-1]
    assert legacy.LEADING_FIELDS["sessions"][:3] == ("id", "title", "subtitle")
    assert legacy.LEADING_FIELDS["event"][-1] == "copyright"
    assert legacy.LEADING_FIELDS["forms"] == ()
    assert legacy.LEADING_FIELDS["tracks"] == ("id", "name", "color", "font_color")


# ------------------------------------------------------------------------------------------------------------ order


def test_order_record_leading_then_alphabetical():
    record = {"zeta": 1, "state": "accepted", "title": "T", "id": 3, "audio": None, "microlocation": None, "a": 0}
    assert list(legacy.order_record("sessions", record)) == [
        "id", "title", "audio", "a", "microlocation", "state", "zeta"]


def test_order_record_missing_leading_fields_are_skipped():
    assert list(legacy.order_record("tracks", {"sessions": [], "name": "x", "id": 1, "color": "#fff"})) == [
        "id",
        "name",
        "color",
        "sessions",
    ]


def test_order_record_forms_all_alphabetical():
    assert list(legacy.order_record("forms", {"speaker_form": "{}", "id": 1, "session_form": "{}"})) == [
        "id",
        "session_form",
        "speaker_form",
    ]


def test_nested_objects_sorted_one_level_deep():
    record = {
        "id": 1,
        "session_type": {"name": "Talk", "length": 0.3, "id": 2},
        "speakers": [{"organisation": "O", "name": "N", "id": 5, "deep": {"b": 1, "a": 2}}, "plain", [3, 1]],
        "version": {"z": {"y": 1, "x": 2}, "a": 1},
    }
    out = legacy.order_record("sessions", record)
    assert list(out["session_type"]) == ["id", "length", "name"]
    assert list(out["speakers"][0]) == ["deep", "id", "name", "organisation"]
    assert list(out["speakers"][0]["deep"]) == ["b", "a"]  # deeper levels keep their order
    assert out["speakers"][1:] == ["plain", [3, 1]]
    assert list(out["version"]) == ["a", "z"]
    assert list(out["version"]["z"]) == ["y", "x"]
    assert record["session_type"] == {"name": "Talk", "length": 0.3, "id": 2}  # input untouched


# ------------------------------------------------------------------------------------------------------- serialize


def test_separators_leave_trailing_spaces():
    text = legacy.dump_record({"id": 1, "name": "Ü", "list": [1, 2]})
    assert text == '{\n    "id": 1, \n    "name": "Ü", \n    "list": [\n        1, \n        2\n    ]\n}'


def test_empty_array_and_no_final_newline():
    assert "".join(legacy.iter_array_text([])) == "[]"
    assert "".join(legacy.iter_array_text(iter([{"a": 1}]))) == '[\n    {\n        "a": 1\n    }\n]'


def test_iter_array_text_is_lazy():
    consumed = []

    def records():
        for i in range(3):
            consumed.append(i)
            yield {"id": i}

    chunks = legacy.iter_array_text(records())
    next(chunks)
    assert consumed == [0]


def _random_value(rnd: random.Random, depth: int):
    kinds = ["str", "int", "float", "none", "bool", "unicode", "escape"]
    if depth < 3:
        kinds += ["dict", "list", "empty"]
    kind = rnd.choice(kinds)
    if kind == "str":
        return "".join(rnd.choice("abc xyz,:{}[]") for _ in range(rnd.randint(0, 12)))
    if kind == "unicode":
        return "新加坡 Šehović – ü \u2028 😀"
    if kind == "escape":
        return 'quote " back \\ tab \t nl \n ctrl \x01 nul \x00'
    if kind == "int":
        return rnd.choice([0, -1, 7, 2**40, -(2**70)])
    if kind == "float":
        return rnd.choice([0.3, -0.0, 1e-7, 1.0, 52.51074, 1e22, 103.735516, float("inf"), float("nan")])
    if kind == "none":
        return None
    if kind == "bool":
        return rnd.random() < 0.5
    if kind == "empty":
        return rnd.choice([{}, []])
    if kind == "dict":
        return {f"k{rnd.randint(0, 99)}": _random_value(rnd, depth + 1) for _ in range(rnd.randint(1, 5))}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(1, 5))]


@pytest.mark.parametrize("seed", range(25))
def test_iter_array_text_matches_json_dumps(seed):
    rnd = random.Random(seed)
    records = [_random_value(rnd, 0) if rnd.random() < 0.2 else _random_value(rnd, 2) for _ in range(rnd.randint(0, 6))]
    records += [{"id": i, "nested": _random_value(rnd, 0)} for i in range(rnd.randint(0, 4))]
    assert "".join(legacy.iter_array_text(records)) == py2_dumps(records)
    for record in records:
        assert legacy.dump_record(record) == py2_dumps(record)


def test_non_string_keys_and_tuples_match_json_dumps():
    value = {1: "a", 2.5: None, False: [1, (2, 3)], None: {}, "s": ()}
    assert legacy.dump_record(value) == py2_dumps(value)


def test_dump_object_and_meta():
    meta = {"root_url": "http://x/", "generator": "g", "files": {"b": 1, "a": 2}}
    assert legacy.dump_meta(meta) == json.dumps(meta, indent=4, ensure_ascii=False, separators=(", ", ": "),
                                                sort_keys=True)
    assert legacy.dump_meta({"root_url": "http://open-event-dev.herokuapp.com/"}) == (
        '{\n    "root_url": "http://open-event-dev.herokuapp.com/"\n}'
    )
    event = {"id": 1, "name": "E", "copyright": None}
    assert legacy.dump_object(event) == py2_dumps(event)


# ------------------------------------------------------------------------------------------------------ datetimes


def test_format_datetime():
    assert legacy.format_datetime(datetime(2016, 3, 18, 9, 30)) == "2016-03-18T09:30:00"
    assert legacy.format_datetime(datetime(2016, 3, 18, 9, 30, 5, 123456)) == "2016-03-18T09:30:05"
    aware = datetime(2016, 3, 18, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    assert legacy.format_datetime(aware) == "2016-03-18T09:30:00"  # wall time, zone dropped
    assert legacy.format_datetime(datetime(999, 1, 2, 3, 4, 5)) == "0999-01-02T03:04:05"
    assert legacy.format_datetime(None) is None


def test_nested_session_type_length():
    assert legacy.nested_session_type_length("00:30") == 0.3
    assert legacy.nested_session_type_length("0:30") == 0.3
    assert legacy.nested_session_type_length("01:30") == 1.3
    assert legacy.nested_session_type_length("02:05") == 2.05
    assert legacy.nested_session_type_length("01.00") == 1.0
    assert legacy.nested_session_type_length("3") == 3.0
    for bad in (None, "", "abc", "1:2:3", "inf", 0.3):
        assert legacy.nested_session_type_length(bad) is None


# ---------------------------------------------------------------------------------------------------------- media


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Hong Phuc Dang", "HongPhucDang"),
        ("hackerspace.sg", "Hackerspace.Sg"),
        ("U-Zyn Chua", "U-ZynChua"),
        ("Mhairi O'Hara", "MhairiO'Hara"),
        ('a<b>c:d"e/f\\g|h?i*j;k', "ABCDEFGHIJK"),
        ("  spaced\tout\nname ", "SpacedOutName"),
        ("", ""),
        (None, ""),
    ],
)
def test_name_slug(name, slug):
    assert legacy.name_slug(name) == slug


def test_url_extension():
    assert legacy.url_extension("http://x/a/photo.JPG?size=2#frag") == ".JPG"
    assert legacy.url_extension("https://github.com/x/raw/slides/Talk%20v2.ppt.pdf") == ".pdf"
    assert legacy.url_extension("https://www.youtube.com/watch?v=abc.mp4") == ""
    assert legacy.url_extension("http://x/dir.d/") == ""
    assert legacy.url_extension("http://x/file.") == ""
    assert legacy.url_extension("http://x/file.verylongextension") == ""
    assert legacy.url_extension(None) == ""
    assert legacy.url_extension("http://[bad") == ""


def test_media_paths_follow_the_table():
    speaker = {"id": 1, "name": "Hong Phuc Dang", "photo": "http://x/HongPhucDang_1.jpg"}
    assert legacy.media_path("speakers", "photo", speaker) == "/images/speakers/HongPhucDang_1.jpg"  # never .jpg.jpg
    assert legacy.media_path("sponsors", "logo", {"id": 8, "name": "hackerspace.sg", "logo": "h.png"}) == (
        "/images/sponsors/Hackerspace.Sg_8.png"
    )
    assert legacy.media_path("event", "logo", {"logo": "http://x/l.svg"}) == "/images/logo.svg"
    assert legacy.media_path("event", "background_image", {"background_image": "http://x/bg"}) == "/images/background"
    track = {"id": 4, "track_image_url": "u.gif"}
    assert legacy.media_path("tracks", "track_image_url", track) == "/images/tracks/image_4.gif"
    session = {"id": 9, "slides": "http://x/s.pdf", "audio": "http://x/a.mp3", "video": "https://youtu.be/x"}
    assert legacy.media_path("sessions", "slides", session) == "/slides/session_9.pdf"
    assert legacy.media_path("sessions", "audio", session) == "/audios/session_9.mp3"
    assert legacy.media_path("sessions", "video", session) == "/videos/session_9"
    assert legacy.media_path("sessions", "title", session) is None
    assert {(m.file, m.field, m.flag) for m in legacy.MEDIA_FIELDS} == {
        ("event", "logo", "image"),
        ("event", "background_image", "image"),
        ("speakers", "photo", "image"),
        ("sponsors", "logo", "image"),
        ("tracks", "track_image_url", "image"),
        ("sessions", "slides", "document"),
        ("sessions", "audio", "audio"),
        ("sessions", "video", "video"),
    }


def test_media_targets_by_flag():
    session = {"id": 9, "slides": "http://x/s.pdf", "audio": "http://x/a.mp3", "video": None}
    assert legacy.media_targets("sessions", session, {"image": True}) == []
    targets = legacy.media_targets("sessions", session, {"document": True, "audio": True, "video": True})
    assert [(t.field, t.flag, t.path, t.member) for t in targets] == [
        ("slides", "document", "/slides/session_9.pdf", "slides/session_9.pdf"),
        ("audio", "audio", "/audios/session_9.mp3", "audios/session_9.mp3"),
    ]
    targets = legacy.media_targets("event", {"logo": "l.png", "background_image": ""}, ["image"])
    assert [t.field for t in targets] == ["logo"]
