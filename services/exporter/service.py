"""Exporter: takes export requests from its durable queue and streams archives to storage (``export_job.py``).

Each delivery runs the job lifecycle of ``shared/jobs/lifecycle.py``: the task's lease (a redelivery while a run is
alive waits for it and then does nothing), started, throttled progress, the outcome; a task whose worker was lost
more than ``JOB_MAX_DELIVERIES`` times ends FAILURE ``too_many_deliveries`` and its request goes to
``exporter.dead_letter``. Storage briefly down is retried for ``STORAGE_RETRY_SECONDS``.
"""

from __future__ import annotations

from typing import Any

from nameko.events import event_handler

from services.exporter.export_job import run_export
from shared import contracts
from shared.jobs import worker
from shared.jobs.lifecycle import EXPORT_EVENTS, JobRun


class ExportRun(JobRun):
    kind = "export"
    events = EXPORT_EVENTS

    def work(self) -> dict[str, Any]:
        # A link is asked for again in place; an upload cut off half-way reruns the export (the object key is the
        # task's, so the rerun replaces the same object). Both share the job's one window.
        request = self.request
        return run_export(task_id=self.task_id, event_id=request["event_id"], options=request["options"],
                          requested_at=contracts.parse_utc_iso(request["occurred_at"]), db=self.service.db,
                          storage=self.service.storage.retrying(self.retry), settings=self.config,
                          on_progress=self.progress, backend=request.get("storage"), before_upload=self.lease.check,
                          export_format=request["format"])


# Through its module: ``nameko run`` starts every class of this module's namespace that has entrypoints.
class ExporterService(worker.JobWorker):
    name = contracts.EXPORTER

    @event_handler(contracts.GATEWAY, contracts.EXPORT_REQUESTED)
    def handle_export_requested(self, payload: dict[str, Any]) -> None:
        ExportRun(self, payload).handle()
