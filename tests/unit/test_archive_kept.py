"""Records kept after a first complete read: replayed exactly (types, key order, floats), fresh copies each time;
the archive replays them instead of reading the zip again, and never after a read that did not reach the end."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import pytest

import shared.archive.kept as kept_module
from shared.archive.kept import KeptRecords
from shared.archive.reader import open_archive, validate_archive
from tests.support.hostile_archives import base_files, encode, write_zip

VALUES = [
    {"b": 1, "a": [True, False, None, 1.0, -0.0, 2**62, "x\u00e9\U0001f600"], "c": {"z": {}, "y": []}},
    {"id": 1.5e300, "nested": [[[{"k": "v"}]]], "": ""},
    [], "text", 7, None, math.pi,
]


def _same(a, b) -> bool:
    return json.dumps(a) == json.dumps(b) and _types(a) == _types(b)


def _types(value):
    if isinstance(value, dict):
        return ("dict", [(k, _types(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_types(v) for v in value])
    return type(value).__name__, repr(value)


@pytest.mark.parametrize("block", [1, 64, kept_module.BLOCK_BYTES])
def test_records_come_back_as_they_went_in(monkeypatch, tmp_path, block):
    monkeypatch.setattr(kept_module, "BLOCK_BYTES", block)
    kept = KeptRecords(tmp_path)
    for value in VALUES * 50:
        kept.add(value)
    kept.finish()
    for _ in range(2):
        replayed = list(kept.replay())
        assert len(replayed) == len(VALUES) * 50
        assert all(_same(a, b) for a, b in zip(replayed, VALUES * 50, strict=True))
    kept.close()
    assert list(tmp_path.iterdir()) == []  # an anonymous file


def test_changes_after_add_are_not_kept_and_replays_are_fresh(tmp_path):
    kept = KeptRecords(tmp_path)
    record = {"id": 1, "list": [1]}
    kept.add(record)
    record["list"].append(2)
    kept.finish()
    first = next(kept.replay())
    first["id"] = 99
    assert next(kept.replay()) == {"id": 1, "list": [1]}


def test_an_unfinished_copy_is_never_replayed(tmp_path):
    kept = KeptRecords(tmp_path)
    kept.add({"id": 1})
    with pytest.raises(RuntimeError):
        list(kept.replay())


def _spoil(path: Path, member: str) -> None:
    """Overwrite a member's compressed data in place (the open archive keeps its file open, so it sees this)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 30 + len(info.filename.encode()) + len(info.extra))
        fh.write(b"\xff" * info.compress_size)


def _members(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {name.rsplit("/", 1)[-1]: name for name in zf.namelist()}


def _archive(path: Path) -> Path:
    """A valid archive whose sessions and speakers deflate little: larger than any read buffer of the zip file."""
    files = base_files()
    for file in ("sessions", "speakers"):
        for n, record in enumerate(files[file]):
            record["notes"] = "".join(hashlib.sha256(f"{file}{n}{i}".encode()).hexdigest() for i in range(1000))
    return write_zip(path, encode(files))


def test_the_archive_reads_each_member_once(tmp_path):
    path = _archive(tmp_path / "a.zip")
    with open_archive(path) as archive:
        validate_archive(archive)
        before = {file: list(archive.records(file)) for file in ("sessions", "speakers")}
        _spoil(path, _members(path)["sessions"])
        _spoil(path, _members(path)["speakers"])
        assert {file: list(archive.records(file)) for file in ("sessions", "speakers")} == before


def test_an_abandoned_read_is_not_kept(tmp_path):
    path = _archive(tmp_path / "a.zip")
    with open_archive(path) as archive:
        validate_archive(archive)
        archive._kept.clear()  # as if no pass had read the file to its end yet
        records = archive._stream("sessions")
        next(records)
        records.close()
        _spoil(path, _members(path)["sessions"])
        with pytest.raises(Exception) as caught:
            list(archive.records("sessions"))
        assert getattr(caught.value, "code", None) == "bad_zip"
