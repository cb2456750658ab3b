"""Importer: turns archives into events (issue: import). For now it answers health checks only."""

from __future__ import annotations

from nameko.rpc import rpc


class ImporterService:
    name = "importer"

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}
