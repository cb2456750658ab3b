"""`tools.cli load-event` reads archives through the hardened reader, as an import does (issue 10 item 7): what the
reader refuses is not loaded, and a valid archive loads as before."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shared.archive.loader import LoadError, load_archive
from shared.models.events import Event
from tests.e2e.test_cli_load_event import _cli
from tests.support.hostile_archives import hostile_specs, valid_archive

CASES = {spec.name: spec for spec in hostile_specs()}


def test_a_valid_archive_loads(tmp_path, sqlite_factory):
    with sqlite_factory() as session:
        result = load_archive(session, valid_archive(tmp_path), keep_ids=False)
        session.commit()
    with sqlite_factory() as session:
        assert session.scalar(sa.select(Event.name).where(Event.id == result.event_id))


@pytest.mark.parametrize("name", ["bomb_ratio_media", "event_name_null"])
def test_what_the_reader_refuses_is_not_loaded(name, tmp_path, sqlite_factory):
    spec = CASES[name]
    path = spec.build(tmp_path / f"{name}.zip")
    with sqlite_factory() as session, pytest.raises(LoadError) as info:
        load_archive(session, path, keep_ids=False)
    assert info.value.file == spec.expected_file
    with sqlite_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


def test_cli_refuses_a_zip_bomb_without_a_traceback(tmp_path):
    path = CASES["bomb_ratio_media"].build(tmp_path / "bomb.zip")
    assert _cli(tmp_path, "migrate").returncode == 0
    done = _cli(tmp_path, "load-event", str(path))
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(f"cannot load {path}: ") and "Traceback" not in done.stderr
