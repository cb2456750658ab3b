"""The job lifecycle (shared/jobs/lifecycle.py) through the thin exporter and importer services: nameko's
``worker_factory`` builds each service with a real SQLite database and records what it publishes and dead-letters."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from nameko.testing.services import worker_factory

from services.exporter.service import ExporterService, ExportRun
from services.importer.import_run import ImportRun
from services.importer.service import ImporterService
from shared import contracts
from shared.config import load_settings
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.jobs.lease import Lease
from shared.models.base import utcnow
from shared.models.jobs import JobLease
from shared.storage_client import StorageClient

REQUESTER = {"id": 1, "email": "organizer@example.org"}


class Recorder:
    """What the service published (``dispatch``) and parked (``dead_letters``)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.parked: list[tuple[dict, dict]] = []

    def dispatch(self, event_type: str, payload: dict) -> None:
        self.events.append((event_type, payload))

    def dead_letters(self, payload: dict, **headers: str) -> None:
        self.parked.append((payload, headers))

    @property
    def types(self) -> list[str]:
        return [event_type for event_type, _ in self.events]


@pytest.fixture
def env(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade_to_head(url)
    settings = replace(load_settings(), database_url=url, var_dir=tmp_path, job_max_deliveries=2)
    return make_session_factory(make_engine(url)), settings


def _worker(service_cls, env, recorder):
    db, settings = env
    return worker_factory(service_cls, config=settings, db=db, dispatch=recorder.dispatch,
                          dead_letters=recorder.dead_letters, storage=StorageClient(proxy=None, settings=settings))


def _export_request(task_id: str) -> dict:
    return contracts.make_payload(contracts.EXPORT_REQUESTED, task_id=task_id, event_id=404, requested_by=REQUESTER,
                                  options={}, format="json")


def _import_request(task_id: str) -> dict:
    return contracts.make_payload(contracts.IMPORT_REQUESTED, task_id=task_id, event_id=None,
                                  requested_by=REQUESTER, key=f"imports/{task_id}/a.zip", filename="a.zip", size=1)


def _wear_out(db, task_id: str, kind: str, deliveries: int) -> None:
    """``deliveries`` runs that each took the lease and died (their leases expired)."""
    for _ in range(deliveries):
        Lease(db, task_id, kind, ttl=60).acquire(max_deliveries=99)
        with db() as session:
            session.execute(sa.update(JobLease).where(JobLease.task_id == task_id)
                            .values(expires_at=utcnow() - timedelta(seconds=1)))
            session.commit()


def test_export_of_a_missing_event_starts_then_fails_once(env):
    recorder = Recorder()
    service = _worker(ExporterService, env, recorder)
    service.handle_export_requested(_export_request("t-missing"))
    assert recorder.types == [contracts.EXPORT_STARTED, contracts.EXPORT_FAILED]
    failed = recorder.events[-1][1]
    assert failed["code"] == "event_not_found" and failed["task_id"] == "t-missing" and failed["event_id"] == 404
    service.handle_export_requested(_export_request("t-missing"))  # a redelivery: the lease is finished
    assert len(recorder.events) == 2


class Died(BaseException):
    """The process stopped (``kill -9``) right after its outcome went out, before the lease was finished."""


class DiesAfterOutcome(Recorder):
    def dispatch(self, event_type: str, payload: dict) -> None:
        super().dispatch(event_type, payload)
        if event_type in (contracts.EXPORT_COMPLETED, contracts.EXPORT_FAILED):
            raise Died


def test_a_run_taking_over_after_the_outcome_went_out_reports_that_same_outcome_without_working(env):
    db, _ = env
    first = DiesAfterOutcome()
    with pytest.raises(Died):
        _worker(ExporterService, env, first).handle_export_requested(_export_request("t-died"))
    assert first.types == [contracts.EXPORT_STARTED, contracts.EXPORT_FAILED]
    with db() as session:  # the lease of the dead run ran out
        session.execute(sa.update(JobLease).where(JobLease.task_id == "t-died")
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    second = Recorder()
    _worker(ExporterService, env, second).handle_export_requested(_export_request("t-died"))
    # No second start and no second run of the work: the very event the dead run published, again.
    assert second.events == [first.events[-1]]
    third = Recorder()
    _worker(ExporterService, env, third).handle_export_requested(_export_request("t-died"))
    assert third.events == []  # finished now


def test_a_run_that_lost_its_lease_before_saving_its_outcome_reports_nothing(env):
    db, _ = env
    recorder = Recorder()
    service = _worker(ExporterService, env, recorder)
    run = ExportRun(service, _export_request("t-lost"))
    assert run.lease.acquire(max_deliveries=9) == "acquired"
    other = Lease(db, "t-lost", "export", ttl=60)
    with db() as session:
        session.execute(sa.update(JobLease).where(JobLease.task_id == "t-lost")
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert other.acquire(max_deliveries=9) == "acquired"
    run.fail(code="event_not_found", message="gone")
    assert recorder.events == [] and run.lease.lost
    with db() as session:
        assert session.get(JobLease, "t-lost").outcome is None


def test_export_whose_worker_kept_dying_is_dead_lettered(env):
    db, _ = env
    _wear_out(db, "t-poison", "export", 2)
    recorder = Recorder()
    payload = _export_request("t-poison")
    _worker(ExporterService, env, recorder).handle_export_requested(payload)
    assert recorder.types == [contracts.EXPORT_FAILED]
    failed = recorder.events[0][1]
    assert failed["code"] == "too_many_deliveries"
    assert "stopped 2 times" in failed["message"]
    assert recorder.parked == [(payload, {"reason": "too_many_deliveries",
                                          "routing_key": contracts.EXPORT_REQUESTED, "task_id": "t-poison"})]


def test_import_whose_worker_kept_dying_fails_with_its_filename(env):
    db, _ = env
    _wear_out(db, "t-heavy", "import", 2)
    recorder = Recorder()
    _worker(ImporterService, env, recorder).handle_import_requested(_import_request("t-heavy"))
    assert recorder.types == [contracts.IMPORT_FAILED]
    failed = recorder.events[0][1]
    assert failed["code"] == "too_many_deliveries" and failed["filename"] == "a.zip"
    assert "(the archive may be too demanding)" in failed["message"]
    assert len(recorder.parked) == 1


def test_import_progress_names_the_file_as_stage_and_the_pass_as_phase(env):
    recorder = Recorder()
    service = _worker(ImporterService, env, recorder)
    run = ImportRun(service, _import_request("t-progress"))
    run.progress("validate:sessions", 3, 10)
    run.progress("validate:sessions", 4, 10)  # within the interval: not published
    assert recorder.types == [contracts.IMPORT_PROGRESS]
    progress = recorder.events[0][1]
    assert [progress[k] for k in ("stage", "phase", "done", "total")] == ["sessions", "validate", 3, 10]


@pytest.mark.parametrize("service_cls", [ExporterService, ImporterService])
def test_job_workers_hold_the_lifecycle_dependencies_and_answer_health(service_cls):
    from nameko.containers import ServiceContainer

    container = ServiceContainer(service_cls, {"AMQP_URI": "memory://"})
    names = {dep.attr_name for dep in container.dependencies}
    assert {"config", "db", "storage", "dispatch", "dead_letters"} <= names
    assert "health" in {entry.method_name for entry in container.entrypoints}
    assert worker_factory(service_cls).health() == {"service": service_cls.name, "status": "ok"}


@pytest.mark.parametrize(("module", "service_cls"), [("services.exporter.service", ExporterService),
                                                     ("services.importer.service", ImporterService)])
def test_nameko_run_finds_exactly_the_worker_service(module, service_cls):
    from nameko.cli.run import import_service

    assert import_service(module) == [service_cls]  # what ``nameko run <module>`` (tools/stack.py) starts
