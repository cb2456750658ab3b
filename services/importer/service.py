"""Importer: takes import requests from its durable queue and turns uploaded archives into events (import_job.py).

Each delivery runs the job lifecycle of ``shared/jobs/lifecycle.py``: the task's lease (a redelivery while a run is
alive waits for it and then does nothing), started, throttled progress, the outcome; a task whose worker was lost
more than ``JOB_MAX_DELIVERIES`` times ends FAILURE ``too_many_deliveries`` and its request goes to
``importer.dead_letter``. A failure is published only if the event was not committed (the terminal state agrees
with the database).
"""

from __future__ import annotations

import os
from typing import Any

from nameko.events import event_handler
from nameko.extensions import DependencyProvider
from nameko.timer import timer

from services.importer import scratch
from services.importer.import_job import scratch_root
from services.importer.import_run import ImportRun
from shared import contracts
from shared.config import load_settings
from shared.jobs import worker

# Read when the module loads: nameko's timer takes its interval at class definition.
SCRATCH_SWEEP_INTERVAL = max(1.0, float(os.environ.get("IMPORTER_SCRATCH_SWEEP_INTERVAL") or 600))


class ScratchSweeper(DependencyProvider):
    """Removes the scratch directories a crashed import left behind, when the importer starts."""

    def start(self) -> None:
        scratch.sweep(scratch_root(load_settings()))

    def get_dependency(self, worker_ctx: Any) -> None:
        return None


# Through its module: ``nameko run`` starts every class of this module's namespace that has entrypoints.
class ImporterService(worker.JobWorker):
    name = contracts.IMPORTER
    scratch_sweeper = ScratchSweeper()

    @timer(interval=SCRATCH_SWEEP_INTERVAL)
    def sweep_scratch(self) -> None:
        """Scratch directories of imports that died with their process (no live job holds their lock)."""
        scratch.sweep(scratch_root(self.config))

    @event_handler(contracts.GATEWAY, contracts.IMPORT_REQUESTED)
    def handle_import_requested(self, payload: dict[str, Any]) -> None:
        ImportRun(self, payload).handle()
