"""The index pass of an archive and its media lookups: what ``reader.EventArchive`` knows before it yields records.

One read of every array file, in reference order (targets first), builds a ``_FileIndex`` per file: ids, duplicates
(exact copies dropped, different records re-keyed), the lookups raw-column archives nest by, the evidence hand-made
variants are judged by (names, back references: ``relations.py``), session-type lengths decided from the sessions
using them. ``ArchiveIndex`` and ``ArchiveMedia`` are the parts of ``EventArchive`` that do this; the reader holds
the layout, the records as yielded, and validation.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from shared.archive.checks import (
    INT32_MAX,
    SINGULAR,
    check_fields,
    type_name,
    valid_id,
)
from shared.archive.legacy import media_fields
from shared.archive.media import SNIFF_BYTES, MediaRef, is_http_url, media_kind, path_candidates, sniff
from shared.archive.relations import Evidence, judge
from shared.archive.repairs import repair
from shared.archive.safezip import ArchiveError
from shared.archive.variants import (
    LIST_RELATIONS,
    SINGLE_RELATIONS,
    decide_length,
    length_readings,
    length_text,
)

ProgressCallback = Callable[[str, int, int | None], None]
_NO_MEDIA = frozenset({"null", "none", "undefined"})  # what hand-made files write for "no media"; never a path
PER_KIND = 50  # warnings listed per code and file; the repeats are summed up in one "more_warnings" line
MAX_ERRORS = 100  # problems listed in a failure (errors); the rest are counted in errors_total
# Errors that make a file unreadable as a whole, as opposed to hostile input (limits) which always fails at once.
_BROKEN = frozenset({"invalid_json", "wrong_top_level_type"})
# Files a hand-made archive can do without when they are broken: nothing refers to them, or the sessions' snapshots
# rebuild what they refer to (as for absent files). A broken sessions or speakers file fails: too much would be lost.
IGNORABLE_WHEN_BROKEN = frozenset({"microlocations", "tracks", "session_types", "sponsors", "forms", "meta",
                                   "social_links"})
PROGRESS_EVERY = 1000
# Targets of references before the files that refer to them.
_INDEX_ORDER = ("microlocations", "tracks", "session_types", "speakers", "sponsors", "forms", "sessions")
_LABEL = {"sessions": "title"}  # what identifies a record to a human, besides its id (default: name)
_LOOKUP = {"tracks": ("name",), "microlocations": ("name",), "session_types": ("name", "length")}
# Files whose records sessions refer to by id and name (hand-made variants check the two agree; relations.py).
_EVIDENCE = ("microlocations", "tracks", "session_types", "speakers")
_BACK_LISTS = ("speakers", "tracks")  # ...and which of them list their sessions


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass


@dataclass
class _Occurrence:
    """One of several different records sharing an id (only kept for duplicated ids)."""

    position: int
    id: int  # the id it is handed out with (a fresh one for all but the first)
    digest: str
    label: Any
    links: frozenset[int]  # ids in its relation list (a session's speakers, a speaker's or track's sessions)


@dataclass
class _FileIndex:
    file: str
    member: str | None
    read: int = 0  # records in the member
    max_id: int = 0
    ids: set[int] = field(default_factory=set)
    duplicated: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)  # positions of exact copies of an earlier record
    rekey: dict[int, int] = field(default_factory=dict)  # position -> fresh id
    groups: dict[int, list[_Occurrence]] = field(default_factory=dict)
    lookup: dict[int, dict[str, Any]] = field(default_factory=dict)  # raw-column nesting
    synthesized: dict[int, dict[str, Any]] = field(default_factory=dict)
    digest: str | None = None
    evidence: Evidence | None = None  # names and back references (hand-made variants)
    relinks: dict[int, dict[tuple[str, int], int]] = field(default_factory=dict)  # sessions: position -> new ids
    linked: dict[int, set[int]] = field(default_factory=dict)  # sessions: id -> ids of speakers/tracks it links
    # session types of hand-made variants: numeric lengths, the durations of the sessions using each type, and the
    # "HH:MM" decided from both (id -> value)
    numeric_lengths: dict[int, Any] = field(default_factory=dict)
    durations: dict[int, dict[int, int]] = field(default_factory=dict)
    lengths: dict[int, str | None] = field(default_factory=dict)
    skipped_ids: set[int] = field(default_factory=set)  # ids of records skipped as unusable (lenient)

    @property
    def count(self) -> int:
        return self.read - len(self.dropped) + len(self.synthesized)




class ArchiveIndex:
    """The index pass of ``EventArchive`` (see the module docstring)."""

    def _ensure_index(self, progress: ProgressCallback = _no_progress) -> dict[str, _FileIndex]:
        if self._index is None:
            self._index = self._build_index(progress)
        return self._index

    def _build_index(self, progress: ProgressCallback) -> dict[str, _FileIndex]:
        index: dict[str, _FileIndex] = {}
        relate = not self._norm.strict
        for file in _INDEX_ORDER:
            entry = index[file] = _FileIndex(file, self._data.get(file))
            if relate and file in _EVIDENCE:
                entry.evidence = Evidence(SINGULAR[file])
            if entry.member is None:
                continue
            try:
                self._index_file(entry, index, progress)
            except ArchiveError as exc:
                self._broken_file(file, exc)  # re-raises what is not a broken file
                entry = index[file] = _FileIndex(file, None)
                if relate and file in _EVIDENCE:
                    entry.evidence = Evidence(SINGULAR[file])
        if relate:
            self._unlinked_back_references(index)
            self._decide_lengths(index["session_types"])
        for entry in index.values():
            for record_id in entry.synthesized:
                entry.ids.add(record_id)
                entry.max_id = max(entry.max_id, record_id)
            if entry.synthesized:
                ids = sorted(entry.synthesized)
                why = ("the file is absent or ignored" if entry.member is None
                       else "ids missing from the file, or skipped" if entry.skipped_ids & set(ids)
                       else "ids missing from the file")
                shown = ", ".join(str(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
                self._warn(
                    "synthesized_records",
                    f"{len(ids)} record(s) rebuilt from the sessions' relations ({why}): id {shown}",
                    file=entry.file,
                )
        for file in _INDEX_ORDER:
            if index[file].duplicated:
                self._resolve_duplicates(index[file])
        return index

    def _index_file(self, entry: _FileIndex, index: dict[str, _FileIndex], progress: ProgressCallback) -> None:
        file = entry.file
        raw_column = self.variant == "raw_column"
        relate = not self._norm.strict
        hasher = hashlib.sha256()
        stage = f"index:{file}"
        progress(stage, 0, None)
        for position, raw in enumerate(self._stream(file, hasher)):
            entry.read = position + 1
            if not isinstance(raw, dict):
                self._skip(entry, position, ArchiveError(
                    "wrong_type", f"expected a JSON object, found {type_name(raw)}", file=file, position=position
                ))
                continue
            record = self._norm.record(file, raw)
            problems: list[ArchiveError] = []
            if self.lenient:
                repair(file, record, _silent)
            else:  # every unusable value of the record, not only the first (it is skipped if there is one)
                repair(file, record, _problems(file, position, problems))
            try:
                check_fields(file, record, position)
            except ArchiveError as problem:
                problems.append(problem)
            if problems:
                self._skip(entry, position, problems, record)
                continue
            record_id = valid_id(record.get("id"))
            if relate and file == "sessions" and record_id not in entry.ids:
                self._relate(position, record, index)
                self._duration(record, index["session_types"])
            if relate and file == "session_types" and record_id is not None and record_id not in entry.ids:
                if length_readings(record.get("length")) is not None:
                    entry.numeric_lengths[record_id] = record["length"]
            if record_id is not None:
                if entry.evidence is not None:
                    entry.evidence.add(record_id, record.get("name"),
                                       record.get("sessions") if file in _BACK_LISTS else None)
                if record_id in entry.ids:
                    entry.duplicated.add(record_id)
                else:
                    entry.ids.add(record_id)
                    entry.max_id = max(entry.max_id, record_id)
                if raw_column and file in _LOOKUP:
                    entry.lookup[record_id] = {key: record.get(key) for key in _LOOKUP[file]}
            if file == "sessions":
                self._collect_missing(record, index)
            if entry.read % PROGRESS_EVERY == 0:
                progress(stage, entry.read, None)
        entry.digest = hasher.hexdigest()
        progress(stage, entry.read, entry.read)

    def _relate(self, position: int, session: dict[str, Any], index: Mapping[str, _FileIndex]) -> None:
        """Hand-made variants: each nested reference of a session checked against the names and back references of
        the records it names (``relations.judge``); conclusive contradictions are relinked, the rest reported."""
        session_id = valid_id(session.get("id"))
        fixes: dict[tuple[str, int], int] = {}
        for key, target in SINGLE_RELATIONS["sessions"].items():
            ref = session.get(key)
            if isinstance(ref, dict):
                chosen = self._judge(index[target], ref, session_id, key)
                if chosen is not None:
                    fixes[key, -1] = chosen
                    session[key] = ref = {**ref, "id": chosen}
                linked = valid_id(ref.get("id"))
                if target in _BACK_LISTS and session_id is not None and linked is not None:
                    index[target].linked.setdefault(session_id, set()).add(linked)
        speakers = session.get("speakers")
        if isinstance(speakers, list):
            for n, item in enumerate(speakers):
                if not isinstance(item, dict):
                    continue
                chosen = self._judge(index["speakers"], item, session_id, "speakers")
                if chosen is not None:
                    fixes["speakers", n] = chosen
                    speakers[n] = item = {**item, "id": chosen}
                linked = valid_id(item.get("id"))
                if session_id is not None and linked is not None:
                    index["speakers"].linked.setdefault(session_id, set()).add(linked)
        if fixes:
            index["sessions"].relinks[position] = fixes

    def _judge(self, entry: _FileIndex, ref: Mapping[str, Any], session_id: int | None, key: str) -> int | None:
        """The id a reference must be relinked to, or None to keep it (a warning says why, when it matters)."""
        ref_id = valid_id(ref.get("id"))
        evidence = entry.evidence
        if ref_id is None or evidence is None or entry.member is None or ref_id in entry.duplicated:
            return None  # an absent file is rebuilt from the snapshots; shared ids are resolved by _choose
        verdict = judge(evidence, ref_id, ref_id in entry.ids, ref.get("name"), session_id, key)
        if verdict is None:
            return None
        self._warn("relation_conflict", verdict.detail, file="sessions", record_id=session_id, field=key,
                   given=ref_id, chosen=verdict.chosen)
        return verdict.chosen if verdict.chosen != ref_id else None

    def _unlinked_back_references(self, index: Mapping[str, _FileIndex]) -> None:
        """Speakers and tracks listing a session that names others: the session's own relations are imported."""
        sessions = index["sessions"]
        for file in _BACK_LISTS:
            entry = index[file]
            if entry.evidence is None:
                continue
            stray: dict[int, list[int]] = {}
            for session_id, listers in entry.evidence.listed_by.items():
                if session_id not in sessions.ids or session_id in sessions.duplicated:
                    continue  # a dangling entry (reported on its own), or an ambiguous shared id
                linked = entry.linked.get(session_id, set())
                for record_id in listers:
                    if record_id not in linked and record_id not in entry.duplicated:
                        stray.setdefault(record_id, []).append(session_id)
            for record_id in sorted(stray):
                ids = sorted(stray[record_id])
                shown = "; ".join(f"session {i} ({_linked_text(file, entry.linked.get(i))})" for i in ids[:5])
                more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                self._warn(
                    "relation_conflict",
                    f"sessions lists {shown}{more}, which do{'es' if len(ids) == 1 else ''} not name "
                    f"this {SINGULAR[file]}; the sessions' own {'speakers' if file == 'speakers' else 'tracks'} "
                    "are imported",
                    file=file, record_id=record_id, field="sessions", given=ids[:10], chosen=None,
                )

    @staticmethod
    def _duration(session: Mapping[str, Any], types: _FileIndex) -> None:
        ref = session.get("session_type")
        type_id = valid_id(ref.get("id")) if isinstance(ref, dict) else None
        start, end = session.get("start_time"), session.get("end_time")
        if type_id is None or not isinstance(start, str) or not isinstance(end, str):
            return
        try:
            seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        except ValueError:
            return
        if 0 < seconds < 7 * 86400:
            counts = types.durations.setdefault(type_id, {})
            minutes = round(seconds / 60)
            counts[minutes] = counts.get(minutes, 0) + 1

    def _decide_lengths(self, types: _FileIndex) -> None:
        """Numeric session type lengths (``0.5``: HH.MM or decimal hours?) read the way their sessions last; rebuilt
        session types get the same canonical ``"HH:MM"``. Reported once per file and kind of decision."""
        decided: dict[str, list[str]] = {"decimal": [], "default": []}
        for type_id, value in types.numeric_lengths.items():
            text, how = decide_length(value, types.durations.get(type_id, {}))
            types.lengths[type_id] = text
            if how in decided:
                decided[how].append(self._length_note(type_id, value, text, types))
        for type_id, record in types.synthesized.items():
            value = record.get("length")
            if isinstance(value, str) and length_readings(value) is None:
                continue  # "00:30" already
            text, how = decide_length(value, types.durations.get(type_id, {}))
            record["length"] = text  # one form for every rebuilt record: "HH:MM", or null when unreadable
            if how in decided:
                decided[how].append(self._length_note(type_id, value, text, types))
        if decided["decimal"]:
            self._warn("length_decimal_hours", f"{_count(decided['decimal'], 'numeric length')} read as decimal "
                       f"hours, as the sessions of the type last: {_listing(decided['decimal'])}",
                       file="session_types", field="length")
        if decided["default"]:
            self._warn("length_ambiguous", f"{_count(decided['default'], 'numeric length')} read as HH.MM (the "
                       "legacy reading; 0.3 is 30 minutes): the sessions' durations confirm neither reading: "
                       f"{_listing(decided['default'])}", file="session_types", field="length")

    @staticmethod
    def _length_note(type_id: int, value: Any, text: str | None, types: _FileIndex) -> str:
        durations = types.durations.get(type_id)
        lasting = ", ".join(f"{m} min" for m in sorted(durations, key=lambda m: -durations[m])[:3]) if durations \
            else "no timed sessions"
        return f"session type {type_id}: {value!r} -> {text} ({lasting})"

    def _collect_missing(self, session: Mapping[str, Any], index: Mapping[str, _FileIndex]) -> None:
        # A relation to a record its file does not hold: rebuilt from the nested snapshot when the file is absent
        # (optional files), or in the hand-made variants. Strict variants leave it to validation (an error).
        for key, target in SINGLE_RELATIONS["sessions"].items():
            ref = session.get(key)
            if isinstance(ref, dict):
                self._missing(index[target], ref)
        speakers = session.get("speakers")
        if isinstance(speakers, list):
            for item in speakers:
                if isinstance(item, dict):
                    self._missing(index["speakers"], item)

    def _missing(self, entry: _FileIndex, ref: Mapping[str, Any]) -> None:
        ref_id = valid_id(ref.get("id"))
        if ref_id is None or ref_id in entry.ids or ref_id in entry.synthesized:
            return
        if entry.member is not None and self._norm.strict:
            return
        record: dict[str, Any] = {"id": ref_id}
        record.update((k, copy.deepcopy(v)) for k, v in ref.items() if k != "id")
        if entry.file == "session_types" and "length" in record and self._norm.strict:
            record["length"] = length_text(record["length"])  # hand-made variants: _decide_lengths
        if entry.file == "speakers" and not isinstance(record.get("name"), str):
            record["name"] = ""
        entry.synthesized[ref_id] = record

    def _resolve_duplicates(self, entry: _FileIndex) -> None:
        """Exact copies are dropped; different records sharing an id are an error in strict variants, else the
        later ones get fresh ids and references are resolved by name/title and back references."""
        file = entry.file
        label_key = _LABEL.get(file, "name")
        link_keys = list(LIST_RELATIONS.get(file, {}))
        groups: dict[int, list[_Occurrence]] = {}
        skipped = set(entry.dropped)
        for position, raw in enumerate(self._stream(file)):
            if position in skipped:
                continue
            record = self._norm.record(file, raw)
            record_id = valid_id(record.get("id"))
            if record_id not in entry.duplicated:
                continue
            text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=repr)
            links = frozenset(
                valid_id(item.get("id"))
                for key in link_keys
                if isinstance(record.get(key), list)
                for item in record[key]
                if isinstance(item, dict) and valid_id(item.get("id")) is not None
            )
            occurrence = _Occurrence(
                position, record_id, hashlib.sha256(text.encode()).hexdigest(), record.get(label_key), links
            )
            groups.setdefault(record_id, []).append(occurrence)
        next_id = entry.max_id
        for record_id, occurrences in groups.items():
            distinct: list[_Occurrence] = []
            for occurrence in occurrences:
                if any(o.digest == occurrence.digest for o in distinct):
                    entry.dropped.add(occurrence.position)
                    self._warn(
                        "duplicate_record",
                        f"record #{occurrence.position + 1} is an exact copy of an earlier record; skipped",
                        file=file, record_id=record_id, field="id",
                    )
                else:
                    distinct.append(occurrence)
            if len(distinct) < 2:
                continue
            if self._norm.strict:
                self._fail(ArchiveError(
                    "duplicate_id", f"{len(distinct)} different records have this id", file=file,
                    record_id=record_id, field="id",
                ))
                continue
            for occurrence in distinct[1:]:
                next_id += 1
                if next_id > INT32_MAX:
                    raise ArchiveError("duplicate_id", "no id left for a duplicated record", file=file,
                                       record_id=record_id, field="id")
                occurrence.id = next_id
                entry.rekey[occurrence.position] = next_id
                entry.ids.add(next_id)
                self._warn(
                    "id_reassigned",
                    f"record #{occurrence.position + 1} reuses this id; it gets id {next_id}",
                    file=file, record_id=record_id, field="id",
                )
            entry.groups[record_id] = distinct
        entry.max_id = next_id


class ArchiveMedia:
    """Media members of ``EventArchive``: what a media value names, its bytes, whether they are what they claim."""

    def media_member(self, path: str) -> str | None:
        """The member a zip-relative media value (``/images/speakers/X_1.jpg``) names, or None if not present."""
        if not isinstance(path, str) or not path.strip() or is_http_url(path.strip()):
            return None
        candidates, _ = path_candidates(path)
        for candidate in candidates:
            name = self._prefix + candidate
            if name in self._media_names:
                return name
        return None

    def media_ref(self, value: Any) -> MediaRef:
        """What a media field's value refers to: ``none``, ``url`` (keep), ``member`` (re-host) or ``absent``."""
        if value is None or (isinstance(value, str) and (not value.strip() or value.strip().casefold() in _NO_MEDIA)):
            return MediaRef("none", value)
        if not isinstance(value, str):
            return MediaRef("absent", value, reason=f"{type_name(value)}, not a path or URL")
        if is_http_url(value.strip()):
            return MediaRef("url", value)
        candidates, reason = path_candidates(value)
        if reason is not None:
            return MediaRef("absent", value, reason=reason)
        member = self.media_member(value)
        if member is None:
            return MediaRef("absent", value, reason="not in the archive")
        return MediaRef("member", value, member=member)

    def media_refs(self, file: str, record: Mapping[str, Any]) -> dict[str, MediaRef]:
        """``media_ref`` of each media field of a record (``file`` is ``event`` or an array file)."""
        return {media.field: self.media_ref(record.get(media.field)) for media in media_fields(file)}

    def open_media(self, member: str) -> BinaryIO:
        """A media member's bytes (buffered), with the size and ratio limits enforced while reading."""
        if member not in self._media_names:
            raise ArchiveError("not_found", f"no media member {member!r} in the archive")
        return io.BufferedReader(self._source.open(member))

    def sniff_media(self, member: str, field: str) -> str | None:
        """None if the member's content plausibly is what ``field`` holds (image, document, audio, video),
        else a human reason (``an XML document, not audio (an error page saved as media?)``)."""
        kind = media_kind(field)
        with self.open_media(member) as stream:
            head = stream.read(SNIFF_BYTES)
        return sniff(head, kind)


def _silent(*_args: Any, **_kwargs: Any) -> None:
    pass


def _label(record: Mapping[str, Any]) -> Any:
    value = record.get("id")
    return value if type(value) is int or (isinstance(value, str) and len(value) <= 64) else None


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"


def _listing(notes: list[str], shown: int = 10) -> str:
    return "; ".join(notes[:shown]) + (f"; and {len(notes) - shown} more" if len(notes) > shown else "")


def _linked_text(file: str, ids: set[int] | None) -> str:
    if not ids:
        return f"no {'speakers' if file == 'speakers' else 'track'}"
    shown = sorted(ids)
    noun = "speaker" if file == "speakers" else "track"
    return f"{noun}{'s' if len(shown) > 1 else ''} " + ", ".join(str(i) for i in shown[:5])


def _problems(file: str, position: int, into: list[ArchiveError]) -> Callable[..., None]:
    """A ``repair`` warn that collects what it would repair as errors (strict reading)."""
    def collect(_code: str, detail: str, *, record_id: Any = None, field: str | None = None,
                problem: str | None = None, check: str = "wrong_type", **_: Any) -> None:
        into.append(ArchiveError(check, problem or detail, file=file, record_id=record_id, field=field,
                                 position=position))

    return collect


def _apply_relinks(session: dict[str, Any], fixes: Mapping[tuple[str, int], int]) -> None:
    for (key, n), chosen in fixes.items():
        if n < 0:
            session[key] = {**session[key], "id": chosen}
        else:
            items = session[key] = list(session[key])
            items[n] = {**items[n], "id": chosen}
