"""Lenient reading of hand-made records: a value the importer cannot use is left out, with a warning, so that one
bad value does not cost the whole record (and one bad record not the whole import).

Applied by the reader to the early 2016 and dasherized variants unless the import asks for ``strict``; legacy and
raw-column archives (written by a server) and the event record are never repaired. What cannot be repaired (no
usable id, a missing or non-text name or title, a record that is not an object) is skipped by the reader instead.

Warning code: ``invalid_value`` (file, record, field, and what was found). A strict reader runs the same function to
find every such problem of a record at once (``warn`` then gets ``problem`` and ``check``, the error code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.archive.checks import DATETIMES, is_datetime, record_label, type_name, valid_id
from shared.archive.legacy import media_fields
from shared.archive.variants import LIST_RELATIONS, SINGLE_RELATIONS

Warn = Callable[..., None]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return type_name(value)


def repair(file: str, record: dict[str, Any], warn: Warn) -> None:
    """Drop (set to null, or leave out of a list) each value of ``record`` that the checks would refuse."""
    label = record_label(record)

    def drop(key: str, detail: str, check: str = "wrong_type") -> None:
        # ``problem`` and ``check`` (the code check_record would use) let a strict reader report it as an error.
        problem, _, _fix = detail.rpartition("; ")
        warn("invalid_value", detail, record_id=label, field=key, problem=problem, check=check)

    for key in DATETIMES.get(file, ()):
        value = record.get(key)
        if value is not None and (not isinstance(value, str) or not is_datetime(value)):
            drop(key, f"{key} is not a date-time ({_shown(value)}); left empty",
                 "invalid_datetime" if isinstance(value, str) else "wrong_type")
            record[key] = None
    for media in media_fields(file):
        value = record.get(media.field)
        if value is not None and not isinstance(value, str):
            drop(media.field, f"{media.field} is {type_name(value)}, not a path or URL; left empty")
            record[media.field] = None
    if file == "session_types":
        length = record.get("length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, (str, int, float))):
            drop("length", f"length is {type_name(length)}, not a duration; left empty")
            record["length"] = None
    for key in SINGLE_RELATIONS.get(file, {}):
        value = record.get(key)
        if value is not None and (not isinstance(value, dict) or valid_id(value.get("id")) is None):
            what = type_name(value) if not isinstance(value, dict) else f"an object with id {_shown(value.get('id'))}"
            drop(key, f"{key} is {what}, which names no record; left empty")
            record[key] = None
    for key in LIST_RELATIONS.get(file, {}):
        items = record.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            drop(key, f"{key} is {type_name(items)}, not an array; left empty")
            record[key] = []
            continue
        # Back references (a speaker's or track's sessions) keep any integer: an unknown one is reported as dangling.
        back = file != "sessions"
        kept = [item for item in items if isinstance(item, dict) and (
            type(item.get("id")) is int if back else valid_id(item.get("id")) is not None)]
        if len(kept) != len(items):
            bad = len(items) - len(kept)
            drop(key, f"{bad} entr{'y' if bad == 1 else 'ies'} of {key} name{'s' if bad == 1 else ''} no record "
                      "(not an object with a valid id); left out")
            record[key] = kept
