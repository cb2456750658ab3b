"""Media inside an archive: find the records' media that live in the archive, check them, re-host them in storage.

A media field (``shared.archive.legacy.MEDIA_FIELDS``: event logo and background, speaker photos, sponsor logos, track
images, session slides/audio/video) holds an http(s) URL, kept as it is (remote media are never fetched), or a path
inside the archive (the reader's ``media_ref`` decides). A path to a member is re-hosted: uploaded to storage under
``imports/<task_id>/media/<member>`` and replaced by the stable public URL ``<GATEWAY_URL>/media/<key>`` (the
gateway redirects it to a fresh signed link). Anything else becomes ``null`` and a warning: a path to a file that is
not in the archive (``media_missing``), a member that is not what its field says, such as an XML error page saved as
``.mp3``, or a value that is neither a URL nor a usable path (``media_invalid``).

Keys derive from the task id, so a redelivered request overwrites the same objects instead of leaving copies. All of
an import's media go to storage in one batch request (one link, one index transaction).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from shared import object_keys
from shared.archive import legacy
from shared.archive.media import MediaRef
from shared.archive.safezip import describe
from shared.object_batch import BatchItem

CHUNK_SIZE = 256 * 1024

# (prefix, objects, called as each object is sent): one request for all of an import's media.
UploadMany = Callable[[str, Iterable[BatchItem], Callable[[BatchItem], None]], None]


class MediaArchive(Protocol):
    def event(self) -> dict[str, Any]: ...

    def records(self, file: str) -> Iterable[Any]: ...

    def media_ref(self, value: Any) -> MediaRef: ...

    def open_media(self, member: str) -> BinaryIO: ...

    def sniff_media(self, member: str, field: str) -> str | None: ...


@dataclass
class MediaPlan:
    """What the scan decided: members to upload (member -> key), members not to publish, and warnings.

    What a media value refers to is the reader's call (``media_ref``: ``none``, ``url``, ``member``, ``absent``);
    ``rewrite`` asks it again per record, so the plan holds per member, not per record.
    """

    archive: MediaArchive
    gateway_url: str
    uploads: dict[str, str] = field(default_factory=dict)
    rejected: set[tuple[str, str]] = field(default_factory=set)  # (member, field) not publishable
    warnings: list[dict[str, Any]] = field(default_factory=list)
    references: int = 0

    def url(self, member: str) -> str:
        return object_keys.public_url(self.gateway_url, self.uploads[member])

    def new_value(self, value: Any, field_name: str) -> Any:
        ref = self.archive.media_ref(value)
        if ref.kind == "none" and isinstance(value, str) and value.strip():
            return None  # the text "null": no media
        if ref.kind in ("none", "url"):
            return value  # absolute URLs stay as they are: remote media are never fetched
        if ref.kind == "member" and ref.member in self.uploads and (ref.member, field_name) not in self.rejected:
            return self.url(ref.member)
        return None  # not in the archive, not a usable path, or not what it claims to be

    def rewrite(self, file: str, record: Any) -> Any:
        """The record with its archive media replaced by their URLs or null (a copy; the source is left alone)."""
        if not isinstance(record, dict):
            return record
        out = None
        for media in legacy.media_fields(file):
            value = record.get(media.field)
            if value is None:
                continue
            new = self.new_value(value, media.field)
            if new is not value:
                if out is None:
                    out = dict(record)
                out[media.field] = new
        return record if out is None else out


class MediaPlanner:
    """Builds a ``MediaPlan`` from records shown to it one at a time (during the loader's index pass, so that
    planning costs no extra read of the archive)."""

    def __init__(self, archive: MediaArchive, task_id: str, gateway_url: str) -> None:
        self.plan = MediaPlan(archive=archive, gateway_url=gateway_url)
        self.archive, self.task_id = archive, task_id
        self._keys: dict[str, str] = {}  # key -> member, to keep two members from sanitizing to one key
        self._verdicts: dict[tuple[str, str], str | None] = {}  # (member, field) -> why not publishable

    def visit(self, file: str, record: Any) -> None:
        if not isinstance(record, dict):
            return
        for media in legacy.media_fields(file):
            value = record.get(media.field)
            if value is not None:
                self._decide(file, record.get("id"), media.field, value)

    def _decide(self, file: str, record_id: Any, field_name: str, value: Any) -> None:
        plan = self.plan
        ref = self.archive.media_ref(value)
        if ref.kind in ("none", "url"):
            return
        plan.references += 1
        shown = value[:300] if isinstance(value, str) else repr(value)[:300]
        where = {"file": file, "record_id": record_id, "field": field_name, "url": shown}
        if ref.kind != "member" or ref.member is None:
            code = "media_missing" if ref.reason == "not in the archive" else "media_invalid"
            plan.warnings.append({"code": code, "message": describe(
                f"{field_name} {shown}: {ref.reason}; the {field_name} is left empty", file, _shown_id(record_id)),
                **where})
            return
        member = ref.member
        if (member, field_name) not in self._verdicts:
            self._verdicts[member, field_name] = self.archive.sniff_media(member, field_name)
        reason = self._verdicts[member, field_name]
        if reason is not None:
            plan.rejected.add((member, field_name))
            plan.warnings.append({"code": "media_invalid", "message": describe(
                f"{field_name} {shown} was not published: {reason}", file, _shown_id(record_id)), **where})
            return
        if member not in plan.uploads:
            key = base = object_keys.import_media_key(self.task_id, member)
            n = 1
            while self._keys.get(key, member) != member:
                n += 1
                key = f"{base}-{n}"
            self._keys[key] = member
            plan.uploads[member] = key


def _shown_id(record_id: Any) -> Any:
    # The event's own media are named by file alone; records by their id when it is printable.
    return record_id if isinstance(record_id, int | str) and not isinstance(record_id, bool) else None


def plan_media(archive: MediaArchive, task_id: str, gateway_url: str) -> MediaPlan:
    """Decide every archive media reference in one read of the media-bearing files; nothing is uploaded yet."""
    planner = MediaPlanner(archive, task_id, gateway_url)
    planner.visit("event", archive.event())
    for file in legacy.ARRAY_FILES:
        if legacy.media_fields(file):
            for record in archive.records(file):
                planner.visit(file, record)
    return planner.plan


def content_type(member: str) -> str:
    return mimetypes.guess_type(member)[0] or "application/octet-stream"


def rehost(archive: MediaArchive, plan: MediaPlan, prefix: str, upload_many: UploadMany,
           on_progress: Callable[[int, int], None] = lambda done, total: None) -> list[str]:
    """Upload every planned member in one batch under ``prefix`` (the keys' common start); returns the keys
    written (for a best-effort cleanup if the import fails). Members are read one at a time as the batch streams."""
    total = len(plan.uploads)
    on_progress(0, total)
    if not total:
        return []
    done = 0

    def items() -> Iterator[BatchItem]:
        for member, key in plan.uploads.items():
            with archive.open_media(member) as fh:
                yield BatchItem(key, content_type(member), iter(lambda: fh.read(CHUNK_SIZE), b""))

    def sent(_item: BatchItem) -> None:
        nonlocal done
        done += 1
        on_progress(done, total)

    upload_many(prefix, items(), sent)
    return list(plan.uploads.values())
