"""nameko dependency providers of the storage service: its settings and its backend, built once per container."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from services.storage.local_backend import LocalBackend
from shared.config import Settings, load_settings


class AppSettings(DependencyProvider):
    """``shared.config.Settings`` read from the environment when the container starts."""

    def setup(self) -> None:
        self.settings = load_settings()

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.settings


class StorageBackend(DependencyProvider):
    """The object backend (local filesystem under ``STORAGE_DIR``); one instance shared by all workers."""

    def setup(self) -> None:
        self.backend = LocalBackend(load_settings().storage_dir)
        # Uploads cut short by a crash (kill -9) cannot clean up after themselves: sweep the old ones on start.
        self.backend.purge_temp_files()

    def get_dependency(self, worker_ctx: Any) -> LocalBackend:
        return self.backend
