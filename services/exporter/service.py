"""Exporter: takes export requests from its durable queue and streams archives to storage.

Each delivery first takes the task's lease (shared/jobs/lease.py): a redelivery while a run is alive waits for it
and then does nothing; a task whose worker was lost more than ``JOB_MAX_DELIVERIES`` times ends FAILURE
``too_many_deliveries`` and its request goes to ``exporter.dead_letter``. Storage briefly down is retried for
``STORAGE_RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy, rpc

from services.exporter.export_job import ExportFailed, run_export
from services.exporter.media import STORAGE_LINK_TTL
from shared import contracts as c
from shared.dependencies import Config, Database
from shared.jobs.dead_letter import DeadLetters
from shared.jobs.lease import DONE, EXHAUSTED, Lease, LeaseLost
from shared.jobs.retry import RetryWindow
from shared.media_fetcher import MediaFetchError
from shared.rpc import RpcTimeout, call

log = logging.getLogger(__name__)
# Storage refusals that are the export's outcome, not a fault of the exporter (their messages are for people).
STORAGE_REFUSALS = ("UnknownBackend", "InactiveBackend", "BackendError", "ObjectGone")
PROGRESS_INTERVAL = 1.0  # seconds between export_progress events: enough for a progress bar, cheap for the broker


def storage_down(exc: BaseException) -> bool:
    """Errors that mean storage is briefly unreachable (restarting): worth another try within the window."""
    return isinstance(exc, RpcTimeout) or (isinstance(exc, ExportFailed) and exc.code == "storage_unavailable")


class ExporterService:
    name = c.EXPORTER

    config = Config()
    db = Database()
    storage = RpcProxy("storage", expiration=30)
    dispatch = EventDispatcher()
    dead_letters = DeadLetters()

    @event_handler(c.GATEWAY, c.EXPORT_REQUESTED)
    def handle_export_requested(self, payload: dict[str, Any]) -> None:
        request = c.load_payload(c.EXPORT_REQUESTED, payload)
        task_id = request["task_id"]
        ids = {"task_id": task_id, "event_id": request["event_id"], "requested_by": request["requested_by"]}
        lease = Lease(self.db, task_id, "export", ttl=self.config.job_lease_seconds, pause=eventlet.sleep)
        claim = lease.acquire(self.config.job_max_deliveries)
        if claim == DONE:
            log.info("export %s: already finished by another delivery; nothing to do", task_id)
            return  # that delivery published the outcome
        with lease.keep(eventlet.spawn):
            if claim == EXHAUSTED:
                deliveries = lease.deliveries - 1
                log.error("export %s: its worker was lost %d times; giving up (request dead-lettered)", task_id,
                          deliveries)
                self.dead_letters(payload, reason="too_many_deliveries", routing_key=c.EXPORT_REQUESTED,
                                  task_id=task_id)
                self._finish(lease, c.EXPORT_FAILED, ids, code="too_many_deliveries",
                             message=f"The export was abandoned: its worker stopped {deliveries} times while working "
                                     "on it. The request was set aside for the operators.")
                return
            self._emit(c.EXPORT_STARTED, ids)
            try:
                result = self._run(request, ids, lease)
            except LeaseLost:
                log.warning("export %s: another run took over; this one stands down", task_id)
                return
            except ExportFailed as exc:
                self._finish(lease, c.EXPORT_FAILED, ids, code=exc.code, message=exc.message)
                return
            except RpcTimeout as exc:
                self._finish(lease, c.EXPORT_FAILED, ids, code="storage_unavailable", message=str(exc))
                return
            except Exception:
                log.exception("export %s failed", task_id)
                self._finish(lease, c.EXPORT_FAILED, ids, code="internal_error",
                             message="The export failed because of an internal error; the operators have the "
                                     "details.")
                return
            self._finish(lease, c.EXPORT_COMPLETED, ids, **result)

    def _run(self, request: dict[str, Any], ids: dict[str, Any], lease: Lease) -> dict[str, Any]:
        last = [0.0]

        def on_progress(stage: str, done: int, total: int | None) -> None:
            if lease.lost:
                raise LeaseLost(f"export {request['task_id']}: the lease was taken over")
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self._emit(c.EXPORT_PROGRESS, ids, stage=stage, done=done, total=total)

        # Storage restarting: the request is safe on its queue, so try again for a while before failing it. A link
        # is asked for again in place; an upload cut off half-way reruns the export (the object key is the task's,
        # so the rerun replaces the same object). Both share one window.
        window = RetryWindow(self.config.storage_retry_seconds, pause=eventlet.sleep)

        def sign_url(key: str, **kwargs: Any) -> str:
            def ask() -> str:
                try:
                    return call(self.storage, "signed_url", key, timeout=self.config.rpc_timeout, **kwargs)
                except RemoteError as exc:
                    if exc.exc_type in STORAGE_REFUSALS:
                        raise ExportFailed("storage_error", str(exc.value)) from None
                    raise

            return window.run(ask, transient=storage_down, what=f"export {request['task_id']}: signed_url")

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

        requested_at = datetime.strptime(request["occurred_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

        def export() -> dict[str, Any]:
            return run_export(task_id=request["task_id"], event_id=request["event_id"], options=request["options"],
                              requested_at=requested_at, db=self.db, sign_url=sign_url, settings=self.config,
                              on_progress=on_progress, storage=request.get("storage"), before_upload=lease.check,
                              media_link=media_link)

        return window.run(export, transient=storage_down, what=f"export {request['task_id']}")

    def _finish(self, lease: Lease, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        """Publish the outcome only as the lease holder: a run that was taken over leaves it to its successor."""
        if not lease.holds():
            log.warning("export %s ended (%s) after another run took over: not reported", ids["task_id"],
                        fields.get("code", "completed"))
            return
        self._emit(event_type, ids, **fields)
        lease.finish()

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}

    def _emit(self, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        self.dispatch(event_type, c.make_payload(event_type, **ids, **fields))
