"""The real storage service in the test process: a nameko container on a broker vhost, its HTTP on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from nameko.containers import ServiceContainer
from nameko.standalone.rpc import ClusterRpcProxy

from services.storage.service import StorageService
from shared.db import upgrade_to_head


def storage_env(var_dir: Path, secret: str, **extra: str) -> dict[str, str]:
    """Storage's variables for a var directory whose SQLite database (object index, backend records) is migrated."""
    database_url = f"sqlite:///{var_dir / 'platform.db'}"
    upgrade_to_head(database_url)
    return {"VAR_DIR": str(var_dir), "DATABASE_URL": database_url, "STORAGE_DIR": str(var_dir / "storage"),
            "SECRET_KEY": secret, **extra}


@contextmanager
def storage_service(amqp_uri: str, port: int, env: dict[str, str]) -> Iterator[Any]:
    """Storage running with ``env`` set (for the block) and HTTP on ``port``; its RPC proxy."""
    config = {"AMQP_URI": amqp_uri, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        container = ServiceContainer(StorageService, config)
        container.start()
        try:
            with ClusterRpcProxy(config, timeout=10) as cluster:
                yield cluster.storage
        finally:
            container.stop()
