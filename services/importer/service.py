"""Importer: takes import requests from its durable queue and turns uploaded archives into events (import_job.py).

Each delivery first takes the task's lease (shared/jobs/lease.py): a redelivery while a run is alive waits for it
and then does nothing; a task whose worker was lost more than ``JOB_MAX_DELIVERIES`` times ends FAILURE
``too_many_deliveries`` and its request goes to ``importer.dead_letter``. Only the lease holder publishes an outcome,
and a failure is published only if the event was not committed (the terminal state agrees with the database).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, rpc
from nameko.timer import timer

from services.importer import scratch
from services.importer.import_job import ImportFailed, ImportJob, find_completed, run_import, scratch_root
from shared import contracts as c
from shared.config import load_settings
from shared.dependencies import Config, Database
from shared.jobs.dead_letter import DeadLetters
from shared.jobs.lease import DONE, EXHAUSTED, Lease, LeaseLost
from shared.jobs.retry import RetryWindow
from shared.rpc import RpcTimeout, call

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 1.0  # seconds between import_progress events: enough for a progress bar, cheap for the broker
MEDIA_CONCURRENCY = 8  # parallel media uploads per import
# Read when the module loads: nameko's timer takes its interval at class definition.
SCRATCH_SWEEP_INTERVAL = max(1.0, float(os.environ.get("IMPORTER_SCRATCH_SWEEP_INTERVAL") or 600))


class ScratchSweeper(DependencyProvider):
    """Removes the scratch directories a crashed import left behind, when the importer starts."""

    def start(self) -> None:
        scratch.sweep(scratch_root(load_settings()))

    def get_dependency(self, worker_ctx: Any) -> None:
        return None


def storage_down(exc: BaseException) -> bool:
    """Errors that mean storage is briefly unreachable (restarting): worth another try within the window."""
    return isinstance(exc, RpcTimeout) or (isinstance(exc, ImportFailed) and exc.code == "storage_unavailable")


class ImporterService:
    name = c.IMPORTER

    config = Config()
    db = Database()
    storage = RpcProxy("storage", expiration=30)
    dispatch = EventDispatcher()
    dead_letters = DeadLetters()
    scratch_sweeper = ScratchSweeper()

    @timer(interval=SCRATCH_SWEEP_INTERVAL)
    def sweep_scratch(self) -> None:
        """Scratch directories of imports that died with their process (no live job holds their lock)."""
        scratch.sweep(scratch_root(self.config))

    @event_handler(c.GATEWAY, c.IMPORT_REQUESTED)
    def handle_import_requested(self, payload: dict[str, Any]) -> None:
        request = c.load_payload(c.IMPORT_REQUESTED, payload)
        task_id = request["task_id"]
        ids = {"task_id": task_id, "event_id": None, "requested_by": request["requested_by"]}
        lease = Lease(self.db, task_id, "import", ttl=self.config.job_lease_seconds, pause=eventlet.sleep)
        claim = lease.acquire(self.config.job_max_deliveries)
        if claim == DONE:
            log.info("import %s: already finished by another delivery; nothing to do", task_id)
            return  # that delivery published the outcome
        with lease.keep(eventlet.spawn):
            # Committed by a run that died before publishing: report the event created then, nothing else.
            done = find_completed(self.db, self.config, task_id)
            if done is not None:
                self._emit(c.IMPORT_COMPLETED, {**ids, "event_id": done["id"]}, **done)
                lease.finish()
                return
            if claim == EXHAUSTED:
                self._give_up(lease, ids, payload, request["filename"])
                return
            self._emit(c.IMPORT_STARTED, ids)
            try:
                result = self._run(request, ids, lease)
            except LeaseLost:
                log.warning("import %s: another run took over; this one stands down", task_id)
                return
            except ImportFailed as exc:
                self._fail(lease, ids, request["filename"], **exc.fields())
                return
            except RpcTimeout as exc:
                self._fail(lease, ids, request["filename"], code="storage_unavailable", message=str(exc))
                return
            except Exception:
                log.exception("import %s failed", task_id)
                self._fail(lease, ids, request["filename"], code="internal_error",
                           message="The import failed because of an internal error; the operators have the details.")
                return
            self._emit(c.IMPORT_COMPLETED, {**ids, "event_id": result["id"]}, **result)
            lease.finish()

    def _run(self, request: dict[str, Any], ids: dict[str, Any], lease: Lease) -> dict[str, Any]:
        last = [0.0]

        def on_progress(stage: str, done: int, total: int | None) -> None:
            eventlet.sleep(0)  # called between chunks of CPU-bound work: heartbeats get their turn
            if lease.lost:
                raise LeaseLost(f"import {request['task_id']}: the lease was taken over")
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                # The reader names passes "validate:sessions"; clients see the file as the stage, the pass as phase.
                phase, _, file = stage.rpartition(":")
                self._emit(c.IMPORT_PROGRESS, ids, stage=file, done=done, total=total, phase=phase or file)

        # Storage restarting: the request is safe on its queue, so try again for a while before failing it. A link
        # is asked for again in place; a download or media upload cut off reruns the import (nothing is written
        # before the last step). Both share one window.
        window = RetryWindow(self.config.storage_retry_seconds, pause=eventlet.sleep)

        def sign_url(key: str, **kwargs: Any) -> str:
            return window.run(lambda: call(self.storage, "signed_url", key, timeout=self.config.rpc_timeout, **kwargs),
                              transient=storage_down, what=f"import {request['task_id']}: signed_url")

        def delete_key(key: str) -> Any:
            return call(self.storage, "delete", key, timeout=self.config.rpc_timeout)

        job = ImportJob(task_id=request["task_id"], key=request["key"], requester_id=request["requested_by"]["id"],
                        db=self.db, settings=self.config, sign_url=sign_url, delete_key=delete_key,
                        on_progress=on_progress, map_fn=eventlet.GreenPool(MEDIA_CONCURRENCY).imap,
                        pause=eventlet.sleep, lease=lease, strict=request["strict"])
        return window.run(lambda: run_import(job), transient=storage_down, what=f"import {request['task_id']}")

    def _fail(self, lease: Lease, ids: dict[str, Any], filename: str, **fields: Any) -> None:
        """Publish a failure only as the lease holder, and only if no run committed the event meanwhile."""
        if not lease.holds():
            log.warning("import %s failed (%s) after another run took over: not reported", ids["task_id"],
                        fields.get("code"))
            return
        done = find_completed(self.db, self.config, ids["task_id"])
        if done is not None:
            self._emit(c.IMPORT_COMPLETED, {**ids, "event_id": done["id"]}, **done)
        else:
            self._emit(c.IMPORT_FAILED, ids, filename=filename, **fields)
        lease.finish()

    def _give_up(self, lease: Lease, ids: dict[str, Any], payload: dict[str, Any], filename: str) -> None:
        deliveries = lease.deliveries - 1
        log.error("import %s: its worker was lost %d times; giving up (request dead-lettered)", ids["task_id"],
                  deliveries)
        self.dead_letters(payload, reason="too_many_deliveries", routing_key=c.IMPORT_REQUESTED,
                          task_id=ids["task_id"])
        self._fail(lease, ids, filename, code="too_many_deliveries",
                   message=f"The import was abandoned: its worker stopped {deliveries} times while working on it "
                           "(the archive may be too demanding). The request was set aside for the operators.")

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}

    def _emit(self, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        self.dispatch(event_type, c.make_payload(event_type, **ids, **fields))
