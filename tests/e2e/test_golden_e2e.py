"""Golden archives through the real system: load into the database, export over HTTP, compare the files' bytes."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.test_export_e2e import exported
from tests.integration.test_golden_export import GOLDEN_EVENTS, GOLDEN_FILES, HAND_EDITED, golden_bytes
from tests.support.e2e import stack_for
from tests.support.legacy_source import load_legacy_event


@pytest.mark.parametrize("name", GOLDEN_EVENTS)
def test_golden_archive_round_trips_through_the_services(name, samples_dir, tmp_path):
    source = samples_dir / "open_event" / "legacy" / name
    with stack_for(tmp_path, {"organizer": False}) as run:
        with run.env.db() as session:
            event_id = load_legacy_event(session, source, keep_ids=True, owner_user_id=run.users["organizer"]).event_id
            session.commit()
        run.start()
        body = exported(run.client("organizer"), event_id)

    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.namelist() == [*GOLDEN_FILES, "meta"]
    for file in GOLDEN_FILES:
        produced = archive.read(file)
        if (name, file) in HAND_EDITED:  # see HAND_EDITED: compared at JSON level
            assert json.loads(produced) == json.loads((source / file).read_bytes())
        else:
            assert produced == golden_bytes(source / file), f"{name}/{file} differs from the golden file"
    meta = json.loads(archive.read("meta"))
    assert meta["root_url"].startswith("http")
    assert {"format_version", "generator", "exported_at", "files"} <= set(meta)
    assert meta["files"]["sessions"]["count"] == len(json.loads((source / "sessions").read_bytes()))
