"""Importer: takes import requests from its durable queue and turns uploaded archives into events (import_job.py)."""

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


class ImporterService:
    name = c.IMPORTER

    config = Config()
    db = Database()
    storage = RpcProxy("storage", expiration=30)
    dispatch = EventDispatcher()
    scratch_sweeper = ScratchSweeper()

    @timer(interval=SCRATCH_SWEEP_INTERVAL)
    def sweep_scratch(self) -> None:
        """Scratch directories of imports that died with their process (no live job holds their lock)."""
        scratch.sweep(scratch_root(self.config))

    @event_handler(c.GATEWAY, c.IMPORT_REQUESTED)
    def handle_import_requested(self, payload: dict[str, Any]) -> None:
        request = c.load_payload(c.IMPORT_REQUESTED, payload)
        ids = {"task_id": request["task_id"], "event_id": None, "requested_by": request["requested_by"]}
        # Redelivered after the commit (worker killed before its ack): report the event created then, nothing else.
        done = find_completed(self.db, self.config, request["task_id"])
        if done is not None:
            self._emit(c.IMPORT_COMPLETED, {**ids, "event_id": done["id"]}, **done)
            return
        self._emit(c.IMPORT_STARTED, ids)
        last = [0.0]

        def on_progress(stage: str, done: int, total: int | None) -> None:
            eventlet.sleep(0)  # called between chunks of CPU-bound work: heartbeats get their turn
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                # The reader names passes "validate:sessions"; clients see the file as the stage, the pass as phase.
                phase, _, file = stage.rpartition(":")
                self._emit(c.IMPORT_PROGRESS, ids, stage=file, done=done, total=total, phase=phase or file)

        def sign_url(key: str, **kwargs: Any) -> str:
            return call(self.storage, "signed_url", key, timeout=self.config.rpc_timeout, **kwargs)

        def delete_key(key: str) -> Any:
            return call(self.storage, "delete", key, timeout=self.config.rpc_timeout)

        job = ImportJob(task_id=request["task_id"], key=request["key"], requester_id=request["requested_by"]["id"],
                        db=self.db, settings=self.config, sign_url=sign_url, delete_key=delete_key,
                        on_progress=on_progress, map_fn=eventlet.GreenPool(MEDIA_CONCURRENCY).imap,
                        pause=eventlet.sleep, strict=request["strict"])
        try:
            result = run_import(job)
        except ImportFailed as exc:
            self._emit(c.IMPORT_FAILED, ids, filename=request["filename"], **exc.fields())
            return
        except RpcTimeout as exc:
            self._emit(c.IMPORT_FAILED, ids, filename=request["filename"], code="storage_unavailable",
                       message=str(exc))
            return
        except Exception:
            log.exception("import %s failed", request["task_id"])
            self._emit(c.IMPORT_FAILED, ids, filename=request["filename"], code="internal_error",
                       message="The import failed because of an internal error; the operators have the details.")
            return
        self._emit(c.IMPORT_COMPLETED, {**ids, "event_id": result["id"]}, **result)

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}

    def _emit(self, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        self.dispatch(event_type, c.make_payload(event_type, **ids, **fields))
