"""Members opened with keep=True: later reads come from the copy made by a first read that reached the end, and
only from such a copy (a partial or failed first read leaves the zip to be read again, with its checks)."""

from __future__ import annotations

import hashlib
import zipfile
from contextlib import closing
from pathlib import Path

import pytest

from shared.archive.safezip import ArchiveError, ArchiveLimits, ZipSource

# text that deflates little, so that the zip is larger than any read buffer
PAYLOAD = b'[{"id": 1, "name": "' + b"".join(hashlib.sha256(bytes([i % 256, i // 256])).hexdigest().encode()
                                            for i in range(4000)) + b'"}]'


def _zip(path: Path, data: bytes = PAYLOAD) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sessions", data)
    return path


def _read(source: ZipSource, *, size: int = -1, keep: bool = True) -> bytes:
    with closing(source.open("sessions", keep=keep)) as stream:
        return stream.read(size) if size >= 0 else stream.readall()


def _spoil(path: Path) -> None:
    """Overwrite the member's compressed data in place (the source keeps its file open, so it sees this)."""
    info = zipfile.ZipFile(path).getinfo("sessions")
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 30 + len(info.filename) + len(info.extra))
        fh.write(b"\xff" * info.compress_size)


def test_a_complete_read_is_kept_and_read_again_without_the_zip(tmp_path):
    path = _zip(tmp_path / "a.zip")
    with closing(ZipSource(path, ArchiveLimits())) as source:
        assert _read(source) == PAYLOAD
        _spoil(path)
        assert _read(source) == PAYLOAD
        assert _read(source) == PAYLOAD


def test_a_partial_read_is_not_kept(tmp_path):
    path = _zip(tmp_path / "a.zip")
    with closing(ZipSource(path, ArchiveLimits())) as source:
        assert _read(source, size=100) == PAYLOAD[:100]
        _spoil(path)
        with pytest.raises(ArchiveError) as caught:
            _read(source)
        assert caught.value.code == "bad_zip"


def test_without_keep_every_read_inflates_the_member(tmp_path):
    path = _zip(tmp_path / "a.zip")
    with closing(ZipSource(path, ArchiveLimits())) as source:
        assert _read(source, keep=False) == PAYLOAD
        _spoil(path)
        with pytest.raises(ArchiveError) as caught:
            _read(source)
        assert caught.value.code == "bad_zip"


def test_the_copy_is_anonymous_and_the_folder_stays_as_it_was(tmp_path):
    path = _zip(tmp_path / "a.zip")
    with closing(ZipSource(path, ArchiveLimits())) as source:
        _read(source)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]
