"""nameko dependency providers of the storage service: its settings and its backends, built once per container."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from services.storage import retention
from services.storage.backends.base import ObjectBackend
from services.storage.records.registry import Registry
from services.storage.settings import load_storage_settings
from shared.config import Settings, check_service_secrets, load_settings
from shared.db import make_engine, make_session_factory
from shared.models.storage import reseal_secrets
from shared.secretbox import current_box


class AppSettings(DependencyProvider):
    """``shared.config.Settings`` read from the environment when the container starts (refused if the secret is
    weak: storage links are signed with a key derived from it)."""

    def setup(self) -> None:
        self.settings = load_settings()
        check_service_secrets(self.settings, self.container.service_name)

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.settings


class BackendRegistry(DependencyProvider):
    """Every backend: the default one (``STORAGE_BACKEND``, ``StorageSettings``) and the backend records in the
    database; one registry per container, shared by all workers."""

    def setup(self) -> None:
        settings = load_settings()
        self.storage_settings = load_storage_settings()
        # Records are looked up on the workers' own sessions; this pool only serves the few lookups outside them.
        self.engine = make_engine(settings.database_url, pool_size=2)
        factory = make_session_factory(self.engine)
        current_box()  # an unusable SECRETS_ENCRYPTION_KEYS entry fails the start, not the first admin request
        with factory() as session:  # plain rows from before encryption, or rows under a key being rotated out
            reseal_secrets(session)
        self.registry = Registry(self.storage_settings, settings.storage_dir, factory)

    def start(self) -> None:
        # Parts of uploads cut short by a crash (kill -9) cannot clean up after themselves; the sweeper repeats this.
        retention.purge_partial_uploads(self.registry.storage_dir, self.storage_settings.tmp_max_age)

    def stop(self) -> None:
        self.engine.dispose()

    def get_dependency(self, worker_ctx: Any) -> Registry:
        return self.registry


class StorageBackend(DependencyProvider):
    """The default backend alone (local filesystem under ``STORAGE_DIR`` unless ``STORAGE_BACKEND`` says otherwise),
    for entrypoints that only ever use it; the service's ``BackendRegistry`` builds it."""

    def get_dependency(self, worker_ctx: Any) -> ObjectBackend:
        for dependency in self.container.dependencies:
            if isinstance(dependency, BackendRegistry):
                return dependency.registry.default_backend
        raise RuntimeError("StorageBackend needs a BackendRegistry dependency on the same service")
