"""One job lifecycle for the workers (exporter, importer): lease, started, throttled progress, the outcome.

A delivery of a job request runs ``JobRun.handle``:

1. take the task's lease (``lease.py``): ``DONE`` (another delivery finished it) acks and does nothing; a live
   holder is waited for;
2. while holding it (renewed from a green thread): a result a dead run left committed is reported as it is
   (``recovered``); a task whose worker was lost too often (``EXHAUSTED``) is dead-lettered and ends FAILURE
   ``too_many_deliveries``;
3. ``<kind>_started``, then the work (``work``), publishing ``<kind>_progress`` at most every ``PROGRESS_INTERVAL``;
4. the error ladder: the job's own ``JobFailed`` ends FAILURE with its fields, a dependency that stayed down
   (``RpcTimeout``) ``storage_unavailable``, anything else ``internal_error`` (logged with its traceback);
   ``LeaseLost`` publishes nothing (the run that took over owns the outcome);
5. the outcome is saved under the lease (only the holder can), published, then the lease is finished
   (``finishing``: a draining worker's deadline waits for that step); a run that takes over a lease with an
   outcome saved (its run died between saving and finishing, perhaps after publishing) publishes that same event
   again instead of working again, so every report of a task says the same;
6. a run handed back by a draining worker past its deadline (``shared/drain.py``) publishes nothing and releases
   the lease: the request is back on its queue and the next delivery takes over at once (no FAILURE).

A service declares its job as a small subclass (``kind``, ``events``, ``work``) and calls ``handle`` from its event
handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import eventlet

from shared import contracts, metrics
from shared.drain import HandedBack, finishing
from shared.jobs.lease import DONE, EXHAUSTED, Lease, LeaseLost
from shared.jobs.retry import RetryWindow
from shared.logs import carry_context
from shared.rpc import RpcTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")

# An outcome is published inline by the worker that reached it; a sweep publishes what is still unannounced only
# this long after, so a live publisher is not repeated (storage's retention sweep, the mailer's outbox).
ANNOUNCE_GRACE = timedelta(seconds=30)
PROGRESS_INTERVAL = 1.0  # seconds between <kind>_progress events: enough for a progress bar, cheap for the broker


class JobFailed(Exception):
    """The job cannot be done; ``fields()`` are the ``<kind>_failed`` fields (at least ``code`` and ``message``,
    both for people: they reach the task and the mail)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def fields(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def storage_down(exc: BaseException) -> bool:
    """Errors that mean storage is briefly unreachable (restarting): worth another try within the window."""
    return isinstance(exc, RpcTimeout) or (isinstance(exc, JobFailed) and exc.code == "storage_unavailable")


@dataclass(frozen=True)
class JobEvents:
    """The contract's event types of one kind of job."""

    requested: str
    started: str
    progress: str
    completed: str
    failed: str


EXPORT_EVENTS = JobEvents(contracts.EXPORT_REQUESTED, contracts.EXPORT_STARTED, contracts.EXPORT_PROGRESS,
                          contracts.EXPORT_COMPLETED, contracts.EXPORT_FAILED)
IMPORT_EVENTS = JobEvents(contracts.IMPORT_REQUESTED, contracts.IMPORT_STARTED, contracts.IMPORT_PROGRESS,
                          contracts.IMPORT_COMPLETED, contracts.IMPORT_FAILED)


class JobRun:
    """One delivery of one job request. ``service`` is the nameko worker: its ``db``, ``config``, ``dispatch``
    (an ``EventDispatcher``) and ``dead_letters`` (``dead_letter.DeadLetters``) are used."""

    kind: ClassVar[str]  # "export": the lease's kind and the word in logs and messages
    events: ClassVar[JobEvents]
    abandoned_hint: ClassVar[str] = ""  # why a worker may keep dying, for the too_many_deliveries message

    def __init__(self, service: Any, payload: dict[str, Any]) -> None:
        self.service, self.payload = service, payload
        self.config = service.config
        self.request = contracts.load_payload(self.events.requested, payload)
        self.task_id: str = self.request["task_id"]
        self.ids = {"task_id": self.task_id, "event_id": self.request.get("event_id"),
                    "requested_by": self.request["requested_by"]}
        self.lease = Lease(service.db, self.task_id, self.kind, ttl=self.config.job_lease_seconds,
                           pause=eventlet.sleep)
        # Storage restarting: the request is safe on its queue, so the job tries again for a while before failing.
        # A step retried in place (a link) and the whole work retried around it share this one window.
        self.window = RetryWindow(self.config.storage_retry_seconds, pause=eventlet.sleep)
        self._last_progress = 0.0
        self._taken = time.monotonic()  # for the job's duration metric

    # ---------------------------------------------------------------------------------------- what a job declares

    def work(self) -> dict[str, Any]:
        """Do the job; return the ``<kind>_completed`` fields or raise ``JobFailed``. Report with ``progress``."""
        raise NotImplementedError

    def recovered(self) -> dict[str, Any] | None:
        """The result a run that died before publishing left committed, to report instead of working again."""
        return None

    def failed_fields(self) -> dict[str, Any]:
        """Fields every ``<kind>_failed`` of this job carries besides the error's."""
        return {}

    def progress_fields(self, stage: str) -> dict[str, Any]:
        return {"stage": stage}

    def succeed(self, result: dict[str, Any]) -> None:
        """Publish ``<kind>_completed`` (only as the lease holder)."""
        self._publish(self.events.completed, self.ids, result)

    def fail(self, **fields: Any) -> None:
        """Publish ``<kind>_failed`` (only as the lease holder)."""
        self._publish(self.events.failed, self.ids, {**self.failed_fields(), **fields})

    # ------------------------------------------------------------------------------------------------ the ladder

    def handle(self) -> None:
        try:
            self._run()
        except HandedBack:
            # The worker is draining past its deadline: nothing is reported, the lease is free for the next
            # delivery (the request goes back to the queue), and what was half done is redone by it.
            log.warning("%s %s: handed back unfinished (drain deadline); another instance takes it", self.kind,
                        self.task_id)
            self.lease.release()
            raise

    def _run(self) -> None:
        claim = self.lease.acquire(self.config.job_max_deliveries)
        if claim == DONE:
            log.info("%s %s: already finished by another delivery; nothing to do", self.kind, self.task_id)
            return  # that delivery published the outcome
        with self.lease.keep(carry_context(eventlet.spawn)):  # the renewal's log lines carry the task id
            if self.lease.outcome is not None:
                with finishing():
                    self._publish_saved(self.lease.outcome)
                return
            done = self.recovered()
            if done is not None:
                log.warning("%s %s: an earlier run committed it and stopped before reporting; reporting its result",
                            self.kind, self.task_id)
                with finishing():
                    self.succeed(done)
                return
            if claim == EXHAUSTED:
                with finishing():
                    self._give_up()
                return
            self.emit(self.events.started, self.ids)
            self._count_start()
            try:
                result = self.retry(self.work)
            except LeaseLost:
                log.warning("%s %s: another run took over; this one stands down", self.kind, self.task_id)
                return
            except JobFailed as exc:
                with finishing():
                    self.fail(**exc.fields())
                return
            except RpcTimeout as exc:
                with finishing():
                    self.fail(code="storage_unavailable", message=str(exc))
                return
            except Exception:
                log.exception("%s %s failed", self.kind, self.task_id)
                with finishing():
                    self.fail(code="internal_error", message=f"The {self.kind} failed because of an internal "
                                                             "error; the operators have the details.")
                return
            with finishing():
                self.succeed(result)

    def _give_up(self) -> None:
        deliveries = self.lease.deliveries - 1
        log.error("%s %s: its worker was lost %d times; giving up (request dead-lettered)", self.kind, self.task_id,
                  deliveries)
        self.service.dead_letters(self.payload, reason="too_many_deliveries", routing_key=self.events.requested,
                                  task_id=self.task_id)
        self.fail(code="too_many_deliveries",
                  message=f"The {self.kind} was abandoned: its worker stopped {deliveries} times while working on "
                          f"it{self.abandoned_hint}. The request was set aside for the operators.")

    # ------------------------------------------------------------------------------------------ for the work

    def progress(self, stage: str, done: int, total: int | None) -> None:
        """The work's progress callback: stops a run whose lease was taken over; at most one event a second."""
        eventlet.sleep(0)  # called between chunks of CPU-bound work: heartbeats get their turn
        if self.lease.lost:
            raise LeaseLost(f"{self.kind} {self.task_id}: the lease was taken over")
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self.emit(self.events.progress, self.ids, done=done, total=total, **self.progress_fields(stage))

    def retry(self, step: Callable[[], T], what: str = "") -> T:
        """Run ``step``, again while storage is down and the job's window allows."""
        name = f"{self.kind} {self.task_id}" + (f": {what}" if what else "")
        return self.window.run(step, transient=storage_down, what=name)

    def emit(self, event_type: str, ids: dict[str, Any], **fields: Any) -> None:
        self.service.dispatch(event_type, contracts.make_payload(event_type, **ids, **fields))

    def _publish(self, event_type: str, ids: dict[str, Any], fields: dict[str, Any]) -> None:
        """The outcome, only as the lease holder: a run that was taken over leaves it to its successor. Saved
        under the lease first (``Lease.record``), so a successor of a run dying after this publishes the same."""
        payload = contracts.make_payload(event_type, **ids, **fields)
        if not self.lease.record({"type": event_type, "payload": payload}):
            log.warning("%s %s ended (%s) after another run took over: not reported", self.kind, self.task_id,
                        fields.get("code", "completed"))
            return
        self._announce(event_type, payload)

    def _publish_saved(self, outcome: dict[str, Any]) -> None:
        """The outcome an earlier run saved and may have published before it died: the same event again."""
        log.warning("%s %s: an earlier run reached its outcome and stopped before finishing; reporting that outcome",
                    self.kind, self.task_id)
        self._announce(outcome["type"], outcome["payload"])

    def _announce(self, event_type: str, payload: dict[str, Any]) -> None:
        self.service.dispatch(event_type, payload)
        self.lease.finish()
        state = (contracts.SUCCESS if event_type == self.events.completed else contracts.FAILURE).lower()
        took = time.monotonic() - self._taken
        metrics.JOBS.labels(self.kind, state).inc()
        metrics.JOB_DURATION.labels(self.kind, state).observe(took)
        log.info("%s %s: %s after %.1f s", self.kind, self.task_id, state, took)

    def _count_start(self) -> None:
        """A started job, and how long its request waited: the request event's ``occurred_at`` is when the gateway
        accepted it (to the second), so the lag also counts redeliveries and a backlog behind busy workers."""
        metrics.JOBS.labels(self.kind, "started").inc()
        waited = (datetime.now(UTC) - contracts.parse_utc_iso(self.request["occurred_at"])).total_seconds()
        metrics.JOB_QUEUE_LAG.labels(self.kind).observe(max(0.0, waited))
        log.info("%s %s: started (requested %.0f s ago)", self.kind, self.task_id, waited)
