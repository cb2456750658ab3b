"""Settings read from the environment, with embedded defaults for a single machine.

Everything lives under ``VAR_DIR`` (``./var`` by default): the SQLite database and local storage. PostgreSQL,
another broker or a public URL are one variable away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value in (None, "") else value


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    amqp_uri: str
    secret_key: str = field(repr=False)
    gateway_url: str
    storage_url: str
    storage_internal_url: str
    storage_dir: Path
    signed_url_ttl: int
    rpc_timeout: float
    media_allow_hosts: tuple[str, ...]
    media_max_bytes: int
    media_timeout: float
    media_deadline: float
    media_concurrency: int
    jwt_ttl: int
    stale_task_seconds: int
    import_max_bytes: int
    upload_max_bytes: int
    upload_image_max_bytes: int


def _upload_max_bytes() -> int:
    return int(_env("UPLOAD_MAX_BYTES", str(100 * 1024 * 1024)))


def load_settings() -> Settings:
    var_dir = Path(_env("VAR_DIR", "var")).resolve()
    return Settings(
        var_dir=var_dir,
        database_url=_env("DATABASE_URL", f"sqlite:///{var_dir / 'platform.db'}"),
        amqp_uri=_env("AMQP_URI", "amqp://guest:guest@localhost:5672/"),
        secret_key=_env("SECRET_KEY", "dev-only-secret-change-me"),
        gateway_url=_env("GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/"),
        storage_url=_env("STORAGE_URL", "http://127.0.0.1:8001").rstrip("/"),
        # Where services reach the storage data plane when that differs from the public URL (containers).
        storage_internal_url=_env("STORAGE_INTERNAL_URL", _env("STORAGE_URL", "http://127.0.0.1:8001")).rstrip("/"),
        storage_dir=Path(_env("STORAGE_DIR", str(var_dir / "storage"))).resolve(),
        signed_url_ttl=int(_env("SIGNED_URL_TTL", "86400")),
        rpc_timeout=float(_env("RPC_TIMEOUT", "10")),
        media_allow_hosts=tuple(h for h in _env("MEDIA_ALLOW_HOSTS", "").split(",") if h),
        media_max_bytes=int(_env("MEDIA_MAX_BYTES", str(50 * 1024 * 1024))),
        media_timeout=float(_env("MEDIA_TIMEOUT", "20")),
        # One export's whole media pass (a slow host must not hold a worker for 6 x MEDIA_TIMEOUT per item), and how
        # many media it fetches at once.
        media_deadline=float(_env("MEDIA_DEADLINE", "600")),
        media_concurrency=max(1, int(_env("MEDIA_CONCURRENCY", "4"))),
        jwt_ttl=int(_env("JWT_TTL", "86400")),
        # A working exporter reports progress every few seconds; ten silent minutes means it is gone.
        stale_task_seconds=int(_env("STALE_TASK_SECONDS", "600")),
        # Largest archive upload the gateway accepts (streamed: memory does not grow with it).
        import_max_bytes=int(_env("IMPORT_MAX_BYTES", str(512 * 1024 * 1024))),
        # The upload API, per file: UPLOAD_MAX_BYTES for /v1/upload/file; UPLOAD_IMAGE_MAX_BYTES for /v1/upload/image,
        # by default 20 MiB or UPLOAD_MAX_BYTES when that is lower.
        upload_max_bytes=_upload_max_bytes(),
        upload_image_max_bytes=int(_env("UPLOAD_IMAGE_MAX_BYTES", str(min(20 * 1024 * 1024, _upload_max_bytes())))),
    )
