"""Records of an array file kept on disk after their first complete read, so that later passes over the file
neither inflate nor parse it again.

The reader reads every data file in several passes (index, validation, the importer's own). The first pass parses
the member with every check (``jsonstream.iter_array``); ``KeptRecords`` stores each record as that pass yielded
it, marshalled, in an anonymous temporary file (beside the archive: the job's scratch directory). Only a read that
reached the end of the array is kept (``finish``); a pass that failed or stopped early leaves the next pass to read
the member again, with its checks. Memory holds one block of marshalled records, never a file.
"""

from __future__ import annotations

import marshal
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK_BYTES = 256 * 1024  # records are written and read back in blocks of about this size
_HEADER = 8  # a block's length
_LENGTH = 4  # a record's length inside its block


class KeptRecords:
    """Add records as they are handed out, ``finish`` at the end of the array, then ``replay`` as often as needed."""

    def __init__(self, directory: Path | None = None) -> None:
        try:
            self._file = tempfile.TemporaryFile(dir=directory)
        except OSError:
            self._file = tempfile.TemporaryFile()
        self._block = bytearray()
        self.complete = False

    def add(self, record: Any) -> None:
        # Marshalled at once: the caller may change the record after it has been handed out.
        data = marshal.dumps(record)
        self._block += len(data).to_bytes(_LENGTH, "little")
        self._block += data
        if len(self._block) >= BLOCK_BYTES:
            self._write()

    def finish(self) -> None:
        self._write()
        self._file.flush()
        self.complete = True

    def _write(self) -> None:
        if self._block:
            self._file.write(len(self._block).to_bytes(_HEADER, "little"))
            self._file.write(self._block)
            self._block = bytearray()

    def replay(self) -> Iterator[Any]:
        """Each record again, a fresh copy, in order (positioned reads: several replays may run at once)."""
        if not self.complete:
            raise RuntimeError("records are replayed only after a complete read")
        fd, offset = self._file.fileno(), 0
        while True:
            header = os.pread(fd, _HEADER, offset)
            if not header:
                return
            size = int.from_bytes(header, "little")
            block = memoryview(os.pread(fd, size, offset + _HEADER))
            offset += _HEADER + size
            at = 0
            while at < size:
                length = int.from_bytes(block[at : at + _LENGTH], "little")
                at += _LENGTH
                yield marshal.loads(block[at : at + length])
                at += length

    def close(self) -> None:
        self._file.close()
