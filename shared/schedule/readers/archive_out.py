"""A schedule's records written as a legacy Open Event archive folder, for the archive reader to validate and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.archive.legacy import dump_object, iter_array_text, order_record

ARRAY_OUT = ("microlocations", "sessions", "speakers", "tracks", "session_types")


def write_folder(records: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "event").write_text(dump_object(order_record("event", records["event"])), encoding="utf-8")
    for file in ARRAY_OUT:
        with (folder / file).open("w", encoding="utf-8") as out:
            for text in iter_array_text(order_record(file, r) for r in records[file]):
                out.write(text)
    return folder
