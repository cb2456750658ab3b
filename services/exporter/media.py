"""The exporter's media: the platform's own media are read from storage by key.

``<GATEWAY_URL>/media/<key>`` URLs (re-hosted by an import, or sent to the upload API) are not fetched over the
public URL: storage signs a data-plane link for exactly that key, and only if the object exists
(``StorageClient.platform_link``); the bytes come over the internal storage URL. The
guarded fetcher then needs no exception, and a ``/media/`` URL whose key is not a public platform object is an
ordinary foreign URL (refused by the guard when it points inside the network). The media pass itself (concurrency,
deadline, content checks) is the archive writer's: ``shared/archive/media_pass.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from shared.archive.media_pass import MediaSource, PlatformReader
from shared.config import Settings
from shared.media_fetcher import FetchedMedia, MediaFetcher

STORAGE_LINK_TTL = 600

# key -> an internal data-plane link for it; raises MediaFetchError (media_missing, media_gone) when there is no such
# object (export_job.media_link, over the StorageClient).
MediaLink = Callable[[str], str]


def media_source(settings: Settings, media_link: MediaLink | None) -> MediaSource:
    """The export's media source: the guarded fetcher, and the platform's own media by key when ``media_link``."""
    fetcher = MediaFetcher.from_settings(settings)
    reader = platform_reader(settings, media_link) if media_link is not None else None
    return MediaSource(fetcher=fetcher, gateway_url=settings.gateway_url, read_platform=reader,
                       concurrency=settings.media_concurrency, deadline_seconds=settings.media_deadline)


def platform_reader(settings: Settings, media_link: MediaLink) -> PlatformReader:
    """Read platform objects over the internal storage URL, on links storage signed for one key each.

    The reader is a fetcher of its own whose only allowed destination is the storage data plane, with no redirects:
    it is never handed a URL from event data, only the link storage returned.
    """
    reader = MediaFetcher(allow_hosts=[urlsplit(settings.storage_internal_url).netloc],
                          max_bytes=settings.media_max_bytes, timeout=settings.media_timeout, max_redirects=0)

    def read(key: str, kind: str, deadline: float) -> FetchedMedia:
        return reader.open(media_link(key), kind=kind, deadline=deadline)

    return read
