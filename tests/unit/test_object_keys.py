"""``shared.object_keys``: every key the platform builds is valid, parses back to its task and event, and only the
public kinds have a ``/media/`` address."""

from __future__ import annotations

import pytest

from shared import object_keys as k

TASK = "3f2b8c1e-0d4a-4e59-9a57-2d1c6f0b7e88"
GATEWAY = "https://events.example.org"


def test_built_keys_are_valid_and_parse_back():
    export = k.export_key(7, TASK)
    assert export == f"exports/event7/{TASK}/event7.zip" and k.archive_filename(7) == "event7.zip"
    calendar = k.export_key(7, TASK, ".ics")
    assert calendar == f"exports/event7/{TASK}/event7.ics" and k.export_filename(calendar) == "event7.ics"
    assert k.key_problem(calendar) is None and k.key_context(calendar) == {"task_id": TASK, "event_id": 7}
    archive = k.import_key(TASK, "../My Event (2016).ZIP")
    media = k.import_media_key(TASK, "images/../speakers/Jöhn Doe.jpg")
    upload = k.upload_key(3, "photo.jpg")
    for key in (export, archive, media, upload):
        assert k.key_problem(key) is None, key
    assert k.key_context(export) == {"task_id": TASK, "event_id": 7}
    assert k.key_context(archive) == k.key_context(media) == {"task_id": TASK, "event_id": None}
    assert k.key_context(upload) == {"task_id": None, "event_id": None}
    assert archive == f"imports/{TASK}/My_Event_2016.zip"
    assert media == f"imports/{TASK}/media/images/speakers/J_hn_Doe.jpg"


def test_an_export_is_named_with_its_formats_extension():
    from shared.archive.formats import FORMATS

    key = k.export_key(7, TASK, ".ics")
    assert key == f"exports/event7/{TASK}/event7.ics" and k.key_problem(key) is None
    assert k.key_context(key) == {"task_id": TASK, "event_id": 7}
    assert k.archive_filename(7, ".xml") == "event7.xml"
    for fmt in FORMATS.values():  # every registered format's extension makes a valid key
        assert k.key_problem(k.export_key(7, TASK, fmt.extension)) is None, fmt.identifier
    assert k.export_key(7, TASK, FORMATS["json"].extension) == k.export_key(7, TASK)


@pytest.mark.parametrize("extension", ["zip", ".", "./x", ".z/p", ". zip", ".a" + "b" * 16, "", None])
def test_an_export_extension_that_cannot_name_a_key_is_refused(extension):
    with pytest.raises(ValueError, match="extension"):
        k.export_key(7, TASK, extension)


def test_only_import_media_and_uploads_are_public():
    media = k.import_media_key(TASK, "images/logo.png")
    upload = k.upload_key(3, "photo.jpg")
    assert k.is_public_key(media) and k.is_public_key(upload)
    assert not k.is_public_key(k.export_key(7, TASK)) and not k.is_public_key(k.import_key(TASK, "a.zip"))
    for key in (media, upload):
        assert k.key_of_url(k.public_url(GATEWAY + "/", key), GATEWAY) == key
    assert k.key_of_url(f"{GATEWAY}/media/{k.export_key(7, TASK)}", GATEWAY) is None


@pytest.mark.parametrize(("key", "problem"), [
    ("", "non-empty"), ("/a", "relative"), ("a/../b", "'..'"), ("a//b", "single '/'"), ("a/./b", "'.' segments"),
    ("a" * 513, "longer than 512"), ("a\\b", "backslash"),
])
def test_key_problems_say_why(key, problem):
    assert problem in k.key_problem(key)


def test_key_prefixes_are_whole_segments():
    assert k.is_key_prefix("") and k.is_key_prefix("exports/2026/")
    assert not k.is_key_prefix("a/../") and not k.is_key_prefix("./") and not k.is_key_prefix("a b/")
