"""One import run in the job lifecycle (``shared/jobs/lifecycle.py``): what an import adds to the common ladder.

- a result a dead run left committed is reported as it is (``recovered``), and a failure is published only if no
  run committed the event meanwhile: the terminal state agrees with the database;
- ``import_completed`` is published without asking the lease again: the event was committed under it;
- every ``import_failed`` names the uploaded file; progress names the archive file as ``stage``, the pass as ``phase``.
"""

from __future__ import annotations

import logging
from typing import Any

import eventlet

from services.importer.import_job import ImportJob, find_completed, run_import
from shared.jobs.lifecycle import IMPORT_EVENTS, JobRun

log = logging.getLogger(__name__)


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
                        pause=eventlet.sleep, lease=self.lease,
                        strict=self.request["strict"], format=self.request.get("format", "json"))
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
