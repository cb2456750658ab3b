"""The import side of the Open Event archive: open an uploaded archive safely, read any variant, validate it
completely, then hand out its records (as often as needed) in the legacy shape, and tell where its media are.

Typical use by the importer::

    with open_archive(path) as archive:           # safe-zip checks; ArchiveError on anything hostile
        counts = validate_archive(archive)        # every file parsed and checked; nothing written yet
        event = archive.event()
        for file in ARRAY_FILES:
            for record in archive.records(file):  # streamed again from the zip, legacy-shaped
                ...
                ref = archive.media_ref(record.get("photo"))   # none / url / member / absent

Memory stays bounded: records are streamed with ijson, and the archive keeps only per-file id sets (plus small
maps for the rare repairs). Reading happens in up to three passes over each member: an index pass (ids,
duplicates), the validation pass and the importer's own pass; each re-reads the member from the zip on disk.

Repairs (each one reported in ``warnings``): an exact copy of an earlier record is skipped (``duplicate_record``);
a relation to a record whose file is absent, or (hand-made variants only) that its file lacks, is rebuilt from the
session's nested snapshot (``synthesized_records``); in hand-made variants, different records sharing an id get
fresh ids (``id_reassigned``) and references are resolved by name/title, then by back reference; a dangling entry of a
speaker's or track's ``sessions`` is reported (``dangling_reference``) and, outside legacy, dropped. In legacy and
raw-column archives a shared id or a session relation to a missing record is an error.

Hand-made variants also get: nested references checked against names and back references (``relations.py``,
``relation_conflict``), unusable values left empty (``repairs.py``, ``invalid_value``), records that cannot be
used skipped (``record_skipped``), broken optional files treated as absent (``file_ignored``, IGNORABLE_WHEN_BROKEN),
numeric session type lengths read by their sessions' durations (``length_decimal_hours``, ``length_ambiguous``) and
loose time zone names canonicalized (``timezone_normalized``). ``open_archive(..., strict=True)`` turns all of that
but the relation checks into problems. Problems do not stop validation: it goes on and raises the first one at the
end, with every problem found in ``errors`` (MAX_ERRORS listed) and ``errors_total``. Warnings are listed at most
PER_KIND times per code and file, then summed up in one ``more_warnings`` line.

Error codes besides those of the modules below: ``missing_file`` (no event file), ``ambiguous_layout`` (several
top-level folders with an event), ``not_found`` (no such media member). Other warning codes: ``empty_relation``,
``id_out_of_range``, ``unknown_timezone``, ``offset_without_timezone``, ``social_links_conflict``,
``checksum_mismatch`` and ``count_mismatch`` (our exporter's ``meta`` lists sha256 and counts per file).

How each variant is detected and normalized: ``shared/archive/variants.py``. Limits and their error codes:
``shared/archive/safezip.py`` and ``shared/archive/jsonstream.py``. Validation rules: ``shared/archive/checks.py``.
Media classification and content sniffing: ``shared/archive/media.py``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from shared.archive.checks import (
    INT32_MAX,
    SINGULAR,
    check_event,
    check_fields,
    check_record,
    type_name,
    valid_id,
)
from shared.archive.jsonstream import iter_array, load_object
from shared.archive.legacy import ARRAY_FILES, media_fields, nested_session_type_length
from shared.archive.media import SNIFF_BYTES, MediaRef, is_http_url, media_kind, path_candidates, sniff
from shared.archive.relations import Evidence, judge
from shared.archive.repairs import repair
from shared.archive.safezip import ArchiveError, ArchiveLimits, Source, issue, open_source
from shared.archive.variants import (
    DATA_FILES,
    FLAT_RELATIONS,
    LIST_RELATIONS,
    RENAMES,
    SINGLE_RELATIONS,
    Normalizer,
    coerce_id,
    decide_length,
    detect_variant,
    length_readings,
    length_text,
)
from shared.contracts import MAX_WARNINGS

__all__ = [
    "ArchiveError",
    "ArchiveLimits",
    "EventArchive",
    "MediaRef",
    "ProgressCallback",
    "open_archive",
    "validate_archive",
]

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


class EventArchive:
    """An opened archive (zip file or folder). Use as a context manager; see the module docstring."""

    variant: str  # "legacy" | "early_2016" | "dasherized" | "raw_column"
    warnings: list[dict[str, Any]]  # non-fatal findings, shaped like ArchiveError.to_dict(); at most MAX_WARNINGS
    warnings_total: int

    def __init__(self, source: Source, path: Path, limits: ArchiveLimits, strict: bool = False) -> None:
        self._source = source
        self.path = path
        self.limits = limits
        self.strict_requested = strict
        self.warnings = []
        self.warnings_total = 0
        self.errors: list[dict[str, Any]] = []  # problems found so far (at most MAX_ERRORS); raised by validate()
        self.errors_total = 0
        self._first_error: ArchiveError | None = None
        self._failure: ArchiveError | None = None
        self._ignored: set[str] = set()  # broken files treated as absent
        self._kinds: dict[tuple[str, str | None], int] = {}  # warnings per (code, file), for PER_KIND
        self._validating = False
        self._index: dict[str, _FileIndex] | None = None
        self._counts: dict[str, int] | None = None
        self._digests: dict[str, str] = {}
        self._locate()
        self._load_event()

    # ------------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> EventArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    # ------------------------------------------------------------------------------------------------- opening

    def _locate(self) -> None:
        names = self._source.members
        prefix = ""
        if not any(name in names for name in DATA_FILES["event"]):
            # Many real zips were packed with one top-level folder (macOS adds __MACOSX/ beside it).
            tops = sorted(
                {
                    name.split("/", 1)[0]
                    for name in names
                    if "/" in name and name.split("/", 1)[1] in DATA_FILES["event"] and not name.startswith("__MACOSX/")
                }
            )
            if len(tops) > 1:
                raise ArchiveError("ambiguous_layout", f"several folders hold an event file: {', '.join(tops[:5])}")
            if not tops:
                raise ArchiveError(
                    "missing_file", "missing (neither at the archive's root nor in a single top-level folder)",
                    file="event",
                )
            prefix = tops[0] + "/"
        self._prefix = prefix
        self._data: dict[str, str] = {}
        for canonical, candidates in DATA_FILES.items():
            for candidate in candidates:
                if prefix + candidate in names:
                    self._data[canonical] = prefix + candidate
                    break
        data_members = set(self._data.values())
        self._media_names = {n for n in names if n.startswith(prefix) and n not in data_members}
        self._root_names = {n[len(prefix) :] for n in names if n.startswith(prefix) and "/" not in n[len(prefix) :]}

    def _load_object(self, file: str) -> dict[str, Any]:
        member = self._source.members[self._data[file]]
        if member.size > self.limits.max_object_bytes:
            raise ArchiveError("member_too_large", f"larger than {self.limits.max_object_bytes} bytes", file=file)
        hasher = hashlib.sha256()
        with closing(self._source.open(member.name, label=file, hasher=hasher)) as stream:
            value = load_object(stream, file, self.limits)
        self._digests[file] = hasher.hexdigest()
        return value

    def _load_event(self) -> None:
        raw = self._load_object("event")
        present = {k: v[len(self._prefix) :] for k, v in self._data.items()}
        self.variant = detect_variant(raw, present["event"], present, self._root_names)
        self._norm = Normalizer(self.variant)
        # Hand-made variants are repaired and their unusable records skipped, unless the import asks for strict.
        self.lenient = not self._norm.strict and not self.strict_requested
        self._event = self._norm.event(raw)
        self._meta = None
        if "meta" in self._data:
            try:
                self._meta = self._norm.meta(self._load_object("meta"))
            except ArchiveError as exc:
                self._broken_file("meta", exc)
        self._links_file: list[Any] | None = None
        if "social_links" in self._data:
            try:
                self._load_links_file()
            except ArchiveError as exc:
                self._broken_file("social_links", exc)

    def _load_links_file(self) -> None:
        """Older archives kept the event's social links in a file of their own."""
        member = self._source.members[self._data["social_links"]]
        if member.size > self.limits.max_object_bytes:
            raise ArchiveError(
                "member_too_large", f"larger than {self.limits.max_object_bytes} bytes", file="social_links"
            )
        links = []
        for item in self._stream("social_links"):
            if isinstance(item, dict) and not self._norm.identity:
                item = self._norm.rename(item, RENAMES["social_links"])
                if "id" in item and not self._norm.strict:
                    item["id"] = coerce_id(item["id"])
            links.append(item)
        self._links_file = links
        if not isinstance(self._event.get("social_links"), list):
            self._event["social_links"] = copy.deepcopy(links)

    def _stream(self, file: str, hasher: Any = None) -> Iterator[Any]:
        with closing(self._source.open(self._data[file], label=file, hasher=hasher)) as stream:
            yield from iter_array(stream, file, self.limits)

    # ----------------------------------------------------------------------------------------------- warnings

    def _warn(
        self, code: str, detail: str, *, file: str | None = None, record_id: Any = None, field: str | None = None,
        **extra: Any,
    ) -> None:
        self.warnings_total += 1
        kind = (code, file)
        seen = self._kinds[kind] = self._kinds.get(kind, 0) + 1
        if seen <= PER_KIND and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append({**issue(code, detail, file=file, record_id=record_id, field=field), **extra})

    def _summarize_warnings(self) -> None:
        """One line for the repeats of each kind of warning beyond PER_KIND (they stay counted in warnings_total)."""
        for (code, file), seen in self._kinds.items():
            if seen > PER_KIND and len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(issue(
                    "more_warnings", f"{seen - PER_KIND} more {code} warnings like the ones above are not listed "
                    f"({seen} in all)", file=file))
        self._kinds = {}

    def _fail(self, error: ArchiveError) -> None:
        """A problem that fails the import: recorded, so that validation goes on and the failure lists them all."""
        if self._first_error is None:
            self._first_error = error
        self.errors_total += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error.to_dict())

    def _broken_file(self, file: str, error: ArchiveError) -> None:
        """A file that cannot be parsed as a whole: ignored with a warning when the import can do without it (hand-made
        variants, see IGNORABLE_WHEN_BROKEN), a problem otherwise; treated as absent from now on either way."""
        if error.code not in _BROKEN:
            raise error  # limits and unreadable zips: hostile or damaged input fails at once
        self._data.pop(file, None)
        self._ignored.add(file)
        if self.lenient and file in IGNORABLE_WHEN_BROKEN:
            rebuilt = " (what the sessions refer to in it is rebuilt from their snapshots)" if file in (
                "microlocations", "tracks", "session_types") else ""
            self._warn("file_ignored", f"{error.detail}; the file is ignored as if it were absent{rebuilt}", file=file)
        else:
            self._fail(error)

    def _skip(self, entry: _FileIndex, position: int, problems: ArchiveError | list[ArchiveError],
              record: Any = None) -> None:
        """A record that cannot be used: left out with a warning (lenient), else problems of the import."""
        entry.dropped.add(position)
        if isinstance(problems, ArchiveError):
            problems = [problems]
        problem = problems[0]
        if not self.lenient:
            for each in problems:
                self._fail(each)
            record_id = valid_id(record.get("id")) if isinstance(record, dict) else None
            if record_id is not None:
                entry.ids.add(record_id)  # it exists, broken: references to it are not reported on top
            return
        record_id = valid_id(record.get("id")) if isinstance(record, dict) else None
        if record_id is not None:
            entry.skipped_ids.add(record_id)
        where = "" if problem.record_id is not None else f"record #{position + 1}: "
        self._warn("record_skipped", f"{where}{problem.detail}; the record is skipped", file=entry.file,
                   record_id=problem.record_id, field=problem.field)

    def _file_warn(self, file: str) -> Callable[..., None]:
        def warn(code: str, detail: str, *, record_id: Any = None, field: str | None = None, **_: Any) -> None:
            self._warn(code, detail, file=file, record_id=record_id, field=field)

        return warn

    # -------------------------------------------------------------------------------------------- public reads

    @property
    def files(self) -> dict[str, str]:
        """Canonical file name -> member name, for the data files present."""
        return dict(self._data)

    def event(self) -> dict[str, Any]:
        """The event record in the legacy shape (a copy; social links merged in for older archives)."""
        return copy.deepcopy(self._event)

    def meta(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._meta)

    def records(self, file: str) -> Iterator[dict[str, Any]]:
        """Records of an array file in the legacy shape, streamed from the archive anew on every call.

        Legacy archives yield each record exactly as parsed. Nothing is yielded for an absent file, except
        records rebuilt from the sessions' relation snapshots (see ``warnings``). Call ``validate_archive``
        first: records of an archive that does not validate may be malformed.
        """
        if file not in ARRAY_FILES:
            raise ValueError(f"{file!r} is not an array file of the archive")
        return (record for _, record in self._iter(file, None))

    def count(self, file: str) -> int:
        """How many records ``records(file)`` yields."""
        return self._ensure_index()[file].count

    # ------------------------------------------------------------------------------------------------ indexing

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

    # ---------------------------------------------------------------------------------------------- iteration

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

    # ---------------------------------------------------------------------------------------------- validation

    def validate(self, on_progress: ProgressCallback | None = None) -> dict[str, int]:
        """See ``validate_archive``."""
        if self._failure is not None:
            raise self._failure
        if self._counts is not None:
            return dict(self._counts)
        progress = on_progress or _no_progress
        index = self._ensure_index(progress)
        self._validating = True
        try:
            counts = self._validate(index, progress)
        finally:
            self._validating = False
            self._summarize_warnings()
        if self._first_error is not None:
            failure = self._first_error
            failure.errors, failure.errors_total = list(self.errors), self.errors_total
            self._failure = failure
            raise failure
        self._counts = counts
        return dict(counts)

    def _validate(self, index: Mapping[str, _FileIndex], progress: ProgressCallback) -> dict[str, int]:
        if self._norm.zone_renamed is not None:
            written, renamed = self._norm.zone_renamed
            self._warn("timezone_normalized", f"timezone {written[:64]!r} is read as {renamed!r}", file="event",
                       record_id=_label(self._event), field="timezone")
        try:
            check_event(self._event, self._warn)  # the event record is never repaired
        except ArchiveError as exc:
            self._fail(exc)
        links = self._event.get("social_links")
        counts: dict[str, int] = {"event": 1, "social_links": len(links) if isinstance(links, list) else 0}
        if self._links_file is not None and isinstance(links, list) and links != self._links_file:
            self._warn("social_links_conflict", "the event's social_links differ from the social_links file; "
                       "the event's are used", file="social_links")
        for file in _INDEX_ORDER:  # a record's own faults before faults in references to it
            stage, total = f"validate:{file}", index[file].count
            progress(stage, 0, total)
            warn = self._file_warn(file)
            done = 0
            for position, record in self._iter(file, warn):
                try:
                    check_record(file, record, position, self, warn)
                except ArchiveError as exc:
                    self._fail(exc)
                done += 1
                if done % PROGRESS_EVERY == 0:
                    progress(stage, done, total)
            counts[file] = done
            progress(stage, done, total)
        if self._norm.offset_without_zone:
            self._warn("offset_without_timezone", "date-times carry UTC offsets but the event has no known time "
                       "zone; their wall time was kept as written", file="event", field="timezone")
        self._check_meta(index)
        return {name: counts[name] for name in ("event", "social_links", *ARRAY_FILES)}

    def _check_meta(self, index: Mapping[str, _FileIndex]) -> None:
        # Archives from our own exporter list each file's sha256 and record count in meta: verify them.
        files = self._meta.get("files") if isinstance(self._meta, dict) else None
        if not isinstance(files, dict):
            return
        for name, info in files.items():
            if not isinstance(info, dict) or name in self._ignored:
                continue
            digest = self._digests.get(name) or (index[name].digest if name in index else None)
            expected = info.get("sha256")
            if digest is not None and isinstance(expected, str) and expected != digest:
                self._warn("checksum_mismatch", "differs from the sha256 recorded in meta (edited after export?)",
                           file=name)
            read = 1 if name == "event" else index[name].read if name in index else None
            if read is not None and isinstance(info.get("count"), int) and info["count"] != read:
                self._warn("count_mismatch", f"holds {read} records, meta says {info['count']}", file=name)

    # --------------------------------------------------------------------------------------------------- media

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


def open_archive(path: Path | str, limits: ArchiveLimits = ArchiveLimits(), *, strict: bool = False) -> EventArchive:
    """Open a zip file or a folder: safe-zip checks, layout, event file, variant. Raises ``ArchiveError``.

    ``strict``: no repairs, no skipped records or ignored files in hand-made variants either; each such problem
    fails the validation instead (legacy and raw-column archives are always read strictly)."""
    path = Path(path)
    source = open_source(path, limits)
    try:
        return EventArchive(source, path, limits, strict)
    except BaseException:
        source.close()
        raise


def limit_repeats(warnings: list[dict[str, Any]], per_kind: int = PER_KIND) -> list[dict[str, Any]]:
    """The first ``per_kind`` warnings of each code and file, then one ``more_warnings`` line per kind for the rest
    (what the archive does with its own warnings, for lists made elsewhere: the importer's media warnings)."""
    seen: dict[tuple[Any, Any], int] = {}
    kept = []
    for warning in warnings:
        kind = (warning.get("code"), warning.get("file"))
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= per_kind:
            kept.append(warning)
    for (code, file), count in seen.items():
        if count > per_kind:
            kept.append(issue("more_warnings", f"{count - per_kind} more {code} warnings like the ones above are "
                              f"not listed ({count} in all)", file=file))
    return kept


def validate_archive(
    archive: EventArchive, on_progress: ProgressCallback | None = None
) -> dict[str, int]:
    """Full validation pass: every file parsed, types, required fields, duplicate ids, every relation resolved.

    Returns the number of records ``records()`` will yield per file (plus ``event`` and ``social_links``).
    Raises ``ArchiveError`` (with file, record_id, field of the first problem) once the whole archive has been
    checked, with every problem found in ``errors`` (at most MAX_ERRORS) and ``errors_total``; limits and
    unreadable data (hostile input) still stop at once. ``on_progress(stage, done,
    total)`` is called every few hundred records (stages ``index:<file>`` then ``validate:<file>``): a
    cooperative caller can yield there.
    """
    return archive.validate(on_progress)

