"""nameko DependencyProviders shared by the services: settings, the platform database, the task id in the logs and
the metrics server."""

from __future__ import annotations

from nameko.extensions import DependencyProvider
from sqlalchemy.orm import Session, sessionmaker

from shared import metrics
from shared.config import Settings, check_service_secrets, load_settings
from shared.db import make_engine, make_session_factory
from shared.logs import TASK_ID


class Config(DependencyProvider):
    """The service's Settings, read from the environment once at container start (refused if the secret is weak)."""

    def setup(self) -> None:
        self.settings = load_settings()
        check_service_secrets(self.settings, self.container.service_name)

    def get_dependency(self, worker_ctx) -> Settings:  # noqa: ANN001
        return self.settings


class Database(DependencyProvider):
    """A session factory for the platform database; workers open short sessions with ``with self.db() as s``."""

    def setup(self) -> None:
        settings = load_settings()
        # One connection per worker (docs/architecture.md fact 6): max_workers bounds every entrypoint of the container.
        self.engine = make_engine(settings.database_url, pool_size=self.container.max_workers)
        self.factory = make_session_factory(self.engine)

    def stop(self) -> None:
        self.engine.dispose()

    def get_dependency(self, worker_ctx) -> sessionmaker[Session]:  # noqa: ANN001
        return self.factory


def _payload_task_id(worker_ctx) -> str | None:  # noqa: ANN001
    """The ``task_id`` of the event payload a worker handles (its first argument), if it names one."""
    args = getattr(worker_ctx, "args", None) or ()
    payload = args[0] if args else (getattr(worker_ctx, "kwargs", None) or {}).get("payload")
    task_id = payload.get("task_id") if isinstance(payload, dict) else None
    return task_id if isinstance(task_id, str) else None


class TaskLogContext(DependencyProvider):
    """Puts the task id of the job a worker handles on every line it logs (``shared.logs.TASK_ID``, shown by the JSON
    format). Set in ``worker_setup``, which runs in the worker's own greenthread just before the handler, and reset in
    ``worker_teardown``; workers without a task (RPC, HTTP, timers) leave it unset."""

    def setup(self) -> None:
        self._tokens: dict = {}  # worker context -> the token that restores the context variable

    def worker_setup(self, worker_ctx) -> None:  # noqa: ANN001
        task_id = _payload_task_id(worker_ctx)
        if task_id is not None:
            self._tokens[worker_ctx] = TASK_ID.set(task_id)

    def worker_teardown(self, worker_ctx) -> None:  # noqa: ANN001
        token = self._tokens.pop(worker_ctx, None)
        if token is not None:
            TASK_ID.reset(token)


class MetricsServer(DependencyProvider):
    """Serves this process's Prometheus metrics (``shared.metrics``) on ``METRICS_PORT`` from the container's start;
    off when it is unset or 0. Once per process: further containers (or services) in it share the one server."""

    def start(self) -> None:
        metrics.serve(load_settings().metrics_port)
