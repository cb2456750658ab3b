"""Exporter: takes export requests from its durable queue and streams archives to storage."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from nameko.events import EventDispatcher, event_handler
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy, rpc

from services.exporter.export_job import ExportFailed, run_export
from services.exporter.media import STORAGE_LINK_TTL
from shared import contracts as c
from shared.dependencies import Config, Database
from shared.media_fetcher import MediaFetchError
from shared.rpc import RpcTimeout, call

log = logging.getLogger(__name__)
# Storage refusals that are the export's outcome, not a fault of the exporter (their messages are for people).
STORAGE_REFUSALS = ("UnknownBackend", "InactiveBackend", "BackendError", "ObjectGone")
PROGRESS_INTERVAL = 1.0  # seconds between export_progress events: enough for a progress bar, cheap for the broker


class ExporterService:
    name = c.EXPORTER

    config = Config()
    db = Database()
    storage = RpcProxy("storage", expiration=30)
    dispatch = EventDispatcher()

    @event_handler(c.GATEWAY, c.EXPORT_REQUESTED)
    def handle_export_requested(self, payload: dict[str, Any]) -> None:
        request = c.load_payload(c.EXPORT_REQUESTED, payload)
        ids = {"task_id": request["task_id"], "event_id": request["event_id"], "requested_by": request["requested_by"]}
        self._emit(c.EXPORT_STARTED, ids)
        last = [0.0]

        def on_progress(stage: str, done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self._emit(c.EXPORT_PROGRESS, ids, stage=stage, done=done, total=total)

        def sign_url(key: str, **kwargs: Any) -> str:
            try:
                return call(self.storage, "signed_url", key, timeout=self.config.rpc_timeout, **kwargs)
            except RemoteError as exc:
                if exc.exc_type in STORAGE_REFUSALS:
                    raise ExportFailed("storage_error", str(exc.value)) from None
                raise

        def media_link(key: str) -> str:
            # The platform's own media: a data-plane link for the key, only if storage holds that object.
            try:
                return call(self.storage, "signed_url", key, method="GET", ttl=STORAGE_LINK_TTL, must_exist=True,
                            data_plane_only=True, timeout=self.config.rpc_timeout)
            except RemoteError as exc:
                if exc.exc_type in ("ObjectNotFound", "InvalidKey"):
                    raise MediaFetchError(f"no such media on this platform: {exc.value}", "media_missing",
                                          key) from None
                if exc.exc_type == "ObjectGone":
                    raise MediaFetchError(f"this media was deleted: {exc.value}", "media_gone", key) from None
                if exc.exc_type in STORAGE_REFUSALS:
                    raise ExportFailed("storage_error", str(exc.value)) from None
                raise

        try:
            requested_at = datetime.strptime(request["occurred_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            result = run_export(task_id=request["task_id"], event_id=request["event_id"], options=request["options"],
                                requested_at=requested_at, db=self.db, sign_url=sign_url, settings=self.config,
                                on_progress=on_progress, storage=request.get("storage"), media_link=media_link)
        except ExportFailed as exc:
            self._emit(c.EXPORT_FAILED, ids, code=exc.code, message=exc.message)
            return
        except RpcTimeout as exc:
            self._emit(c.EXPORT_FAILED, ids, code="storage_unavailable", message=str(exc))
            return
        except Exception:
            log.exception("export %s failed", request["task_id"])
            self._emit(c.EXPORT_FAILED, ids, code="internal_error",
                       message="The export failed because of an internal error; the operators have the details.")
            return
        self._emit(c.EXPORT_COMPLETED, ids, **result)

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}

    def _emit(self, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        self.dispatch(event_type, c.make_payload(event_type, **ids, **fields))
