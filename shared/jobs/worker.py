"""What the nameko service of a job worker (exporter, importer) holds: the dependencies ``lifecycle.JobRun`` uses by
name (``config``, ``db``, ``storage``, ``dispatch``, ``dead_letters``) and the ``health`` RPC. A worker service
subclasses it, names itself and adds its event handler (nameko collects inherited dependencies and entrypoints).

Import the module, not the class, into a service module: ``nameko run services.<name>.service`` starts every class
of the module's namespace that has entrypoints, and this base has one (``health``)."""

from __future__ import annotations

import os

from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from shared.config import load_settings
from shared.dependencies import Config, Database, MetricsServer, TaskLogContext
from shared.jobs.dead_letter import DeadLetters
from shared.storage_client import Storage


class BatchPriority(DependencyProvider):
    """Lowers the worker process's CPU priority to ``JOB_NICENESS`` when the container starts (never raises it: a
    process started nicer stays so, and a second container in the process changes nothing).

    Exports and imports are batch work, CPU-bound for seconds: below the gateway, whose polls must answer at once
    when both want the CPU. On an idle machine their speed is unchanged; next to other busy processes they get less.
    """

    def setup(self) -> None:
        niceness = load_settings().job_niceness
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) < niceness:
                os.setpriority(os.PRIO_PROCESS, 0, niceness)
        except OSError:  # not permitted here: run at the priority it has
            pass


class JobWorker:
    name: str

    priority = BatchPriority()
    log_context = TaskLogContext()
    metrics_server = MetricsServer()

    config = Config()
    db = Database()
    storage = Storage(expiration=30)
    dispatch = EventDispatcher()
    dead_letters = DeadLetters()

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}
