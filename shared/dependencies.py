"""nameko DependencyProviders shared by the services: settings and the platform database."""

from __future__ import annotations

from nameko.extensions import DependencyProvider
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, check_service_secrets, load_settings
from shared.db import make_engine, make_session_factory


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
