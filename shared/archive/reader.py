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
duplicates), the validation pass and the importer's own pass; the first inflates and parses the member and keeps
its records on disk for the later ones (``kept.py``), so memory still holds no whole file.

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
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from shared.archive.archive_index import (
    _BROKEN,
    _INDEX_ORDER,
    IGNORABLE_WHEN_BROKEN,
    MAX_ERRORS,
    PER_KIND,
    PROGRESS_EVERY,
    ArchiveIndex,
    ArchiveMedia,
    ProgressCallback,
    _FileIndex,
    _label,
    _no_progress,
)
from shared.archive.archive_links import ArchiveLinks
from shared.archive.checks import (
    check_event,
    check_record,
    valid_id,
)
from shared.archive.jsonstream import iter_array, load_object
from shared.archive.kept import KeptRecords
from shared.archive.legacy import ARRAY_FILES
from shared.archive.media import MediaRef
from shared.archive.safezip import ArchiveError, ArchiveLimits, Source, issue, open_source
from shared.archive.variants import (
    DATA_FILES,
    RENAMES,
    Normalizer,
    coerce_id,
    detect_variant,
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


class EventArchive(ArchiveLinks, ArchiveIndex, ArchiveMedia):
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
        self._kept: dict[str, KeptRecords] = {}  # array file -> its records after a first complete read
        self._locate()
        self._load_event()

    # ------------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> EventArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for kept in self._kept.values():
            kept.close()
        self._kept.clear()
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
        """The records of an array file as ``iter_array`` parses them; after a first complete read, from the copy
        kept of them (``kept.py``), unless the bytes are wanted (``hasher``)."""
        kept = self._kept.get(file)
        if kept is not None and hasher is None:
            yield from kept.replay()
            return
        keep = KeptRecords(self.path.parent) if kept is None else None
        try:
            with closing(self._source.open(self._data[file], label=file, hasher=hasher)) as stream:
                for record in iter_array(stream, file, self.limits):
                    if keep is not None:
                        keep.add(record)
                    yield record
            if keep is not None:
                keep.finish()
                self._kept[file], keep = keep, None
        finally:
            if keep is not None:  # a failed or abandoned read is never replayed
                keep.close()

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

    # indexing: archive_index.ArchiveIndex

    # records as yielded, their relations linked: archive_links.ArchiveLinks

    # ---------------------------------------------------------------------------------------------- validation

    def validate(self, on_progress: ProgressCallback | None = None,
                 visit: Callable[[str, Any], None] | None = None) -> dict[str, int]:
        """See ``validate_archive``."""
        if self._failure is not None:
            raise self._failure
        if self._counts is not None:
            if visit is not None:
                raise ValueError("the archive was validated already: visit would see no record")
            return dict(self._counts)
        progress = on_progress or _no_progress
        index = self._ensure_index(progress)
        self._validating = True
        try:
            counts = self._validate(index, progress, visit)
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

    def _validate(self, index: Mapping[str, _FileIndex], progress: ProgressCallback,
                  visit: Callable[[str, Any], None] | None) -> dict[str, int]:
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
                if visit is not None:
                    visit(file, record)
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

    # media: archive_index.ArchiveMedia

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
    archive: EventArchive, on_progress: ProgressCallback | None = None,
    visit: Callable[[str, Any], None] | None = None,
) -> dict[str, int]:
    """Full validation pass: every file parsed, types, required fields, duplicate ids, every relation resolved.

    Returns the number of records ``records()`` will yield per file (plus ``event`` and ``social_links``).
    Raises ``ArchiveError`` (with file, record_id, field of the first problem) once the whole archive has been
    checked, with every problem found in ``errors`` (at most MAX_ERRORS) and ``errors_total``; limits and
    unreadable data (hostile input) still stop at once. ``on_progress(stage, done,
    total)`` is called every few hundred records (stages ``index:<file>`` then ``validate:<file>``): a
    cooperative caller can yield there.

    ``visit(file, record)`` sees every record of the array files as ``records(file)`` will yield it, the files in
    reference order (targets first): a caller that needs one more look at each record gets it here instead of
    reading the archive again. The records are the validation's own: a visit must not change them.
    """
    return archive.validate(on_progress, visit)

