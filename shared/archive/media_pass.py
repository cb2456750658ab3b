"""The media pass of an archive: each media slot's file fetched by a deadline, judged by its content, spooled.

- Where bytes come from is the ``MediaSource``: the guarded fetcher (``shared.media_fetcher``) for foreign URLs, and
  optionally a reader of the platform's own media (``/media/<key>`` URLs, read from storage by key: the exporter
  hands it in, ``services/exporter/media.py``).
- Either way the body must be media of the slot's kind (``shared.media_types``): an XML error page is not audio, SVG
  is not an image. A URL without an extension gets the detected format's (``/images/speakers/X_1`` + ``.jpg``).
- Up to ``concurrency`` fetches run at once (a green pool), across all media slots of the export; each file goes
  into the zip as soon as it has arrived (media members are in completion order; readers look members up by name),
  so a slow host holds one slot and not the pass. One deadline bounds the whole media pass (``MEDIA_DEADLINE``):
  what is not fetched by then becomes a ``media_deadline`` warning, the record keeps its URL and the export goes
  on. Warnings are reported in record order.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import eventlet
from eventlet.queue import LightQueue

from shared import object_keys
from shared.archive import legacy
from shared.archive.media import media_kind
from shared.logs import carry_context
from shared.media_fetcher import FetchedMedia, MediaFetcher, MediaFetchError

SPOOL_IN_MEMORY = 1024 * 1024  # a fetched file up to this size stays in memory; larger ones go to a temp file

PlatformReader = Callable[[str, str, float], FetchedMedia]  # (key, kind, deadline) -> the open response


@dataclass(frozen=True)
class MediaItem:
    """One media slot of one record to fetch."""

    file: str
    record_id: Any
    field: str
    kind: str
    url: str
    media: legacy.MediaField
    record_name: Any = None

    @property
    def key(self) -> tuple[str, Any, str]:
        return self.file, self.record_id, self.field

    def zip_path(self, detected_extension: str) -> str:
        """The legacy path: the URL's extension, else the detected format's."""
        record = {"id": self.record_id, "name": self.record_name}
        path = self.media.path(record, self.url)
        if legacy.url_extension(self.url):
            return path
        return path + detected_extension


@dataclass
class Fetched:
    """The outcome of one item: its bytes in ``spool`` (``size`` of them) at ``path``, or ``error``."""

    item: MediaItem
    spool: IO[bytes] | None = None
    size: int = 0
    path: str | None = None
    error: MediaFetchError | None = None

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


@dataclass
class MediaSource:
    """Where media bytes come from, and the bounds of the media pass."""

    fetcher: MediaFetcher
    gateway_url: str = ""
    read_platform: PlatformReader | None = None
    concurrency: int = 4
    deadline_seconds: float = 600.0

    def open(self, url: str, kind: str, deadline: float) -> FetchedMedia:
        if self.read_platform is not None:
            key = object_keys.key_of_url(url, self.gateway_url)
            if key is not None:
                return self.read_platform(key, kind, deadline)
        return self.fetcher.open(url, kind=kind, deadline=deadline)


def media_items(file: str, media: legacy.MediaField, records: Iterable[dict[str, Any]]) -> Iterator[
        MediaItem | tuple[dict[str, Any], str]]:
    """The fetchable media of ``records`` for one slot; values that are not http(s) URLs come back as
    ``(record, value)`` for the caller to report."""
    kind = media_kind(media.flag)
    for record in records:
        url = record.get(media.field)
        if url is None or url == "":
            continue
        if not (isinstance(url, str) and url.lower().startswith(("http://", "https://"))):
            yield record, str(url)
            continue
        yield MediaItem(file=file, record_id=record.get("id"), field=media.field, kind=kind, url=url, media=media,
                        record_name=record.get("name"))


def fetch_concurrently(items: list[MediaItem], source: MediaSource, deadline: float) -> Iterator[Fetched]:
    """Fetch ``items`` with up to ``source.concurrency`` at once; yield each outcome as soon as it is there.

    Completion order, so that one slow host holds one slot, not the whole pass; only finished files wait, one at a
    time, for the zip. The caller closes each ``Fetched``. If the caller stops early (the export failed), the
    fetches still running are killed and finished ones not taken are closed.
    """
    size = max(1, source.concurrency)
    pool = eventlet.GreenPool(size)
    finished: LightQueue = LightQueue()
    running: set[Any] = set()
    todo = iter(items)
    spawn = carry_context(pool.spawn)  # the fetches' log lines carry the export's task id

    def run(item: MediaItem) -> None:
        # Every fetch puts exactly one outcome, so the consumer never waits for a thread that is gone.
        outcome: Fetched | BaseException = RuntimeError(f"the fetch of {item.url} ended without an outcome")
        try:
            outcome = fetch_one(source, item, deadline)
        except Exception as exc:  # storage down, a bug: the consumer re-raises it and the export fails
            outcome = exc
        finally:
            running.discard(eventlet.getcurrent())
            finished.put(outcome)

    try:
        while True:
            while len(running) < size and (item := next(todo, None)) is not None:
                running.add(spawn(run, item))
            if not running and finished.empty():
                return
            outcome = finished.get()
            if isinstance(outcome, BaseException):
                raise outcome
            yield outcome
    finally:
        for thread in list(running):
            thread.kill()
        while not finished.empty():
            outcome = finished.get_nowait()
            if isinstance(outcome, Fetched):
                outcome.close()


def fetch_one(source: MediaSource, item: MediaItem, deadline: float) -> Fetched:
    if time.monotonic() >= deadline:
        return Fetched(item, error=_deadline_error(source, item))
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - handed to the caller
    try:
        # Spooled first: a fetch can fail half-way, and a member half-written into a streamed zip cannot be undone.
        with source.open(item.url, item.kind, deadline) as media:
            for chunk in media.iter_chunks():
                spool.write(chunk)
            extension = media.extension
    except MediaFetchError as exc:
        spool.close()
        if exc.code == "timeout" and time.monotonic() >= deadline:
            return Fetched(item, error=_deadline_error(source, item))
        return Fetched(item, error=exc)
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)
    return Fetched(item, spool=spool, size=size, path=item.zip_path(extension))


def _deadline_error(source: MediaSource, item: MediaItem) -> MediaFetchError:
    return MediaFetchError(f"not fetched within the export's media deadline ({source.deadline_seconds:g} s); "
                           "the URL is kept", "media_deadline", item.url)
