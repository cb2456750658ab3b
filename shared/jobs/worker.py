"""What the nameko service of a job worker (exporter, importer) holds: the dependencies ``lifecycle.JobRun`` uses by
name (``config``, ``db``, ``storage``, ``dispatch``, ``dead_letters``) and the ``health`` RPC. A worker service
subclasses it, names itself and adds its event handler (nameko collects inherited dependencies and entrypoints).

Import the module, not the class, into a service module: ``nameko run services.<name>.service`` starts every class
of the module's namespace that has entrypoints, and this base has one (``health``)."""

from __future__ import annotations

from nameko.events import EventDispatcher
from nameko.rpc import rpc

from shared.dependencies import Config, Database
from shared.jobs.dead_letter import DeadLetters
from shared.storage_client import Storage


class JobWorker:
    name: str

    config = Config()
    db = Database()
    storage = Storage(expiration=30)
    dispatch = EventDispatcher()
    dead_letters = DeadLetters()

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}
