"""Importer: takes import requests from its durable queue and turns uploaded archives into events (import_job.py).

Each delivery runs the job lifecycle of ``shared/jobs/lifecycle.py``: the task's lease (a redelivery while a run is
alive waits for it and then does nothing), started, throttled progress, the outcome; a task whose worker was lost
more than ``JOB_MAX_DELIVERIES`` times ends FAILURE ``too_many_deliveries`` and its request goes to
``importer.dead_letter``. A failure is published only if the event was not committed (the terminal state agrees
with the database).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import eventlet
from nameko.events import EventDispatcher, event_handler
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.timer import timer

from services.importer import scratch
from services.importer.import_job import ImportJob, find_completed, run_import, scratch_root
from shared import contracts
from shared.config import load_settings
from shared.dependencies import Config, Database
from shared.jobs.dead_letter import DeadLetters
from shared.jobs.lifecycle import IMPORT_EVENTS, JobRun
from shared.storage_client import Storage

log = logging.getLogger(__name__)
MEDIA_CONCURRENCY = 8  # parallel media uploads per import
# Read when the module loads: nameko's timer takes its interval at class definition.
SCRATCH_SWEEP_INTERVAL = max(1.0, float(os.environ.get("IMPORTER_SCRATCH_SWEEP_INTERVAL") or 600))


class ImportRun(JobRun):
    kind = "import"
    events = IMPORT_EVENTS
    abandoned_hint = " (the archive may be too demanding)"

    def work(self) -> dict[str, Any]:
        # A link is asked for again in place; a download or media upload cut off reruns the import (nothing is
        # written before the last step). Both share the job's one window.
        job = ImportJob(task_id=self.task_id, key=self.request["key"],
                        requester_id=self.request["requested_by"]["id"], db=self.service.db, settings=self.config,
                        storage=self.service.storage.retrying(self.retry), on_progress=self.progress,
                        map_fn=eventlet.GreenPool(MEDIA_CONCURRENCY).imap, pause=eventlet.sleep, lease=self.lease,
                        strict=self.request["strict"])
        return run_import(job)

    def recovered(self) -> dict[str, Any] | None:
        # Committed by a run that died before publishing: report the event created then, nothing else.
        return find_completed(self.service.db, self.config, self.task_id)

    def failed_fields(self) -> dict[str, Any]:
        return {"filename": self.request["filename"]}

    def progress_fields(self, stage: str) -> dict[str, Any]:
        # The reader names passes "validate:sessions"; clients see the file as the stage, the pass as phase.
        phase, _, file = stage.rpartition(":")
        return {"stage": file, "phase": phase or file}

    def succeed(self, result: dict[str, Any]) -> None:
        # The event was committed under the lease (checked inside the write transaction): it exists, so report it.
        self.emit(self.events.completed, {**self.ids, "event_id": result["id"]}, **result)
        self.lease.finish()

    def fail(self, **fields: Any) -> None:
        """Only as the lease holder, and only if no run committed the event meanwhile."""
        if not self.lease.holds():
            log.warning("import %s failed (%s) after another run took over: not reported", self.task_id,
                        fields.get("code"))
            return
        done = self.recovered()
        if done is not None:
            self.emit(self.events.completed, {**self.ids, "event_id": done["id"]}, **done)
        else:
            self.emit(self.events.failed, self.ids, **self.failed_fields(), **fields)
        self.lease.finish()


class ScratchSweeper(DependencyProvider):
    """Removes the scratch directories a crashed import left behind, when the importer starts."""

    def start(self) -> None:
        scratch.sweep(scratch_root(load_settings()))

    def get_dependency(self, worker_ctx: Any) -> None:
        return None


class ImporterService:
    name = contracts.IMPORTER

    config = Config()
    db = Database()
    storage = Storage(expiration=30)
    dispatch = EventDispatcher()
    dead_letters = DeadLetters()
    scratch_sweeper = ScratchSweeper()

    @timer(interval=SCRATCH_SWEEP_INTERVAL)
    def sweep_scratch(self) -> None:
        """Scratch directories of imports that died with their process (no live job holds their lock)."""
        scratch.sweep(scratch_root(self.config))

    @event_handler(contracts.GATEWAY, contracts.IMPORT_REQUESTED)
    def handle_import_requested(self, payload: dict[str, Any]) -> None:
        ImportRun(self, payload).handle()

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}
