"""Records as ``reader.EventArchive`` yields them: duplicates dropped or re-keyed, each relation linked to the
record it resolves to (by id, or by name where a hand-made variant's evidence says so: ``relations.py``), nested
snapshots rebuilt from the linked records. The part of ``EventArchive`` that does this; it reads the index built
by ``archive_index.ArchiveIndex``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shared.archive.archive_index import (
    _LABEL,
    _apply_relinks,
    _FileIndex,
    _silent,
)
from shared.archive.checks import (
    SINGULAR,
    valid_id,
)
from shared.archive.legacy import nested_session_type_length
from shared.archive.repairs import repair
from shared.archive.safezip import ArchiveError
from shared.archive.variants import (
    FLAT_RELATIONS,
    LIST_RELATIONS,
    SINGLE_RELATIONS,
)


class ArchiveLinks:
    """Iteration with relations linked (see the module docstring)."""

    def known(self, file: str, record_id: int) -> bool:
        return record_id in self._ensure_index()[file].ids

    def _iter(self, file: str, warn: Callable[..., None] | None) -> Iterator[tuple[int | None, dict[str, Any]]]:
        index = self._ensure_index()
        entry = index[file]
        warn_ = warn or _silent
        rewrite = self._rewrites(file, index)
        if entry.member is not None:
            dropped, rekey = entry.dropped, entry.rekey
            for position, raw in enumerate(self._stream(file)):
                if dropped and position in dropped:
                    continue
                record = self._norm.record(file, raw, warn_)
                if self.lenient:
                    repair(file, record, warn_)
                source_id = record.get("id") if isinstance(record, dict) else None
                if entry.lengths and isinstance(record, dict) and source_id in entry.lengths:
                    record["length"] = entry.lengths[source_id]
                if rekey and position in rekey:
                    record["id"] = rekey[position]
                if rewrite and isinstance(record, dict):
                    fixes = entry.relinks.get(position) if entry.relinks else None
                    if fixes:
                        _apply_relinks(record, fixes)
                    self._link(file, record, source_id, index, warn_)
                yield position, record
        for record in entry.synthesized.values():
            yield None, copy.deepcopy(record)

    def _rewrites(self, file: str, index: Mapping[str, _FileIndex]) -> bool:
        # Legacy records are never touched (the round trip needs them byte for byte).
        if self.variant == "raw_column":
            return file in FLAT_RELATIONS
        if self._norm.strict:
            return False
        return file in SINGLE_RELATIONS or file in LIST_RELATIONS

    def _link(
        self,
        file: str,
        record: dict[str, Any],
        source_id: Any,
        index: Mapping[str, _FileIndex],
        warn: Callable[..., None],
    ) -> None:
        """References of one record: flat columns nested, duplicated ids resolved, dangling back references dropped."""
        if self.variant == "raw_column":
            for column, key in FLAT_RELATIONS.get(file, {}).items():
                if column in record:
                    value = record[column]
                    if value is None or valid_id(value) is not None:
                        del record[column]
                        record[key] = self._nested(key, value, index)
            if file == "sessions" and "speakers" not in record:
                record["speakers"] = []  # the raw-column export carried no session-speaker links
            return
        record_label = source_id if isinstance(source_id, (int, str)) else None
        for key, target in SINGLE_RELATIONS.get(file, {}).items():
            ref = record.get(key)
            if isinstance(ref, dict):
                ref_id = valid_id(ref.get("id"))
                if ref_id is not None and ref_id in index[target].groups:
                    chosen = self._choose(index[target], ref_id, ref, file, source_id, key)
                    if chosen != ref_id:
                        record[key] = {**ref, "id": chosen}
        for key, target in LIST_RELATIONS.get(file, {}).items():
            items = record.get(key)
            if not isinstance(items, list):
                continue
            back = file != "sessions"
            kept: list[Any] = []
            changed = False
            for item in items:
                if isinstance(item, dict):
                    ref_id = valid_id(item.get("id"))
                    if ref_id is not None and ref_id in index[target].groups:
                        chosen = self._choose(index[target], ref_id, item, file, source_id, key)
                        if chosen != ref_id:
                            item, changed = {**item, "id": chosen}, True
                    elif back and type(item.get("id")) is int and (ref_id is None or ref_id not in index[target].ids):
                        warn("dangling_reference",
                             f"{key} lists {SINGULAR[target]} {item['id']}, which does not exist; dropped",
                             record_id=record_label, field=key)
                        changed = True
                        continue
                kept.append(item)
            if changed:
                record[key] = kept

    def _choose(
        self, entry: _FileIndex, ref_id: int, ref: Mapping[str, Any], file: str, source_id: Any, key: str
    ) -> int:
        """Which of several records sharing ``ref_id`` a reference means: the one whose name/title matches,
        then the one that lists the referring record back."""
        group = entry.groups[ref_id]
        label = ref.get(_LABEL.get(entry.file, "name"))
        candidates = group
        if label is not None:
            matching = [o for o in candidates if o.label == label]
            if matching:
                candidates = matching
        referrer = valid_id(source_id)
        if len(candidates) > 1 and referrer is not None:
            listing = [o for o in candidates if referrer in o.links]
            if listing:
                candidates = listing
        if len(candidates) == 1:
            return candidates[0].id
        if self._validating:  # reported once, by the validation pass
            detail = (f"{key} refers to {SINGULAR[entry.file]} {ref_id}, but {len(group)} different records have "
                      "that id and nothing tells which one is meant")
            record_id = source_id if isinstance(source_id, (int, str)) else None
            if self.lenient:
                self._warn("relation_conflict", f"{detail}: kept the first of them", file=file, record_id=record_id,
                           field=key, given=ref_id, chosen=group[0].id)
            else:
                self._fail(ArchiveError("duplicate_id", detail, file=file, record_id=record_id, field=key))
        return group[0].id

    def _nested(self, key: str, value: Any, index: Mapping[str, _FileIndex]) -> dict[str, Any] | None:
        if value is None:
            return None
        target = SINGLE_RELATIONS["sessions"][key]
        snapshot = index[target].lookup.get(value, {})
        if key == "session_type":
            length = snapshot.get("length")
            return {
                "id": value,
                "length": nested_session_type_length(length) if isinstance(length, str) else length,
                "name": snapshot.get("name"),
            }
        return {"id": value, "name": snapshot.get("name")}
