"""A third service that reacts to finished exports: the smallest useful subscriber.

Run it next to the platform (same broker):

    .venv/bin/nameko run --config deploy/nameko.yml examples.export_subscriber

then export an event; each completed export is logged with its size and download link. A real subscriber would
publish a site, back up the archive or update a search index here. Its queue is durable: exports that finish while
it is down are delivered when it comes back.
"""

from __future__ import annotations

import logging

from nameko.events import event_handler

from shared.contracts import EXPORT_COMPLETED, EXPORTER, load_payload

log = logging.getLogger(__name__)


class ExportSubscriber:
    name = "export_subscriber"

    @event_handler(EXPORTER, EXPORT_COMPLETED)
    def on_export_completed(self, payload: dict) -> None:
        # Delivery is at least once: a real handler keys its side effects on payload["task_id"].
        done = load_payload(EXPORT_COMPLETED, payload)
        log.info("event %s exported by %s: %d bytes, sha256 %s, download %s (link until %s)", done["event_id"],
                 done["requested_by"]["email"], done["size"], done["sha256"], done["download_url"], done["expires_at"])
        retention = done["retention"]  # the archive itself: None only from exporters older than this field
        if retention is not None:
            log.info("  kept in backend %s until %s", retention["backend"], retention["delete_at"] or "deleted")
