"""Settings of the storage service itself, read from the environment (the shared ones are in ``shared.config``).

The default backend is configured here: ``STORAGE_BACKEND=local|s3|gcs|dropbox|seafile`` and, for the remote ones,
one variable per config key, ``<KIND>_<KEY>`` (``S3_BUCKET``, ``S3_ENDPOINT_URL``, ``GCS_CREDENTIALS_FILE``,
``DROPBOX_REFRESH_TOKEN``, ``SEAFILE_SERVER_URL``, ...: the keys of ``records.config.FIELDS``). For S3 the usual
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION`` work too (boto3 reads the first two itself).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.storage.records.config import FIELDS, KINDS, InvalidBackendConfig, normalize

DEFAULT_SWEEP_INTERVAL = 300.0


@dataclass(frozen=True)
class StorageSettings:
    backend_kind: str
    backend_config: dict[str, Any]
    backend_token: str | None = field(repr=False)
    keep_days: int  # of the default backend; 0: keep
    sweep_interval: float  # seconds between retention sweeps
    sweep_batch: int  # objects claimed per sweep
    claim_seconds: int  # how long a sweeper owns the objects it claimed
    tmp_max_age: float = 600.0  # seconds a partial upload (.tmp-*) may go untouched before it counts as abandoned


def _get(environ: Mapping[str, str], name: str, default: str = "") -> str:
    value = environ.get(name)
    return default if value in (None, "") else value


def _default_backend_config(kind: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], str | None]:
    raw: dict[str, Any] = {}
    for name in FIELDS[kind]:
        value = _get(environ, f"{kind.upper()}_{name.upper()}")
        if value:
            raw[name] = value
    if kind == "s3" and "region" not in raw and _get(environ, "AWS_DEFAULT_REGION"):
        raw["region"] = _get(environ, "AWS_DEFAULT_REGION")
    try:
        return normalize(kind, raw, None, from_env=True)
    except InvalidBackendConfig as exc:
        raise ValueError(f"STORAGE_BACKEND={kind}: {exc}") from None


def load_storage_settings(environ: Mapping[str, str] | None = None) -> StorageSettings:
    environ = os.environ if environ is None else environ
    kind = _get(environ, "STORAGE_BACKEND", "local").lower()
    if kind not in KINDS:
        raise ValueError(f"STORAGE_BACKEND must be one of {', '.join(KINDS)}, not {kind!r}")
    config, token = _default_backend_config(kind, environ)
    keep_days = int(_get(environ, "STORAGE_KEEP_DAYS", "0"))
    if keep_days < 0:
        raise ValueError("STORAGE_KEEP_DAYS must not be negative")
    return StorageSettings(
        backend_kind=kind,
        backend_config=config,
        backend_token=token,
        keep_days=keep_days,
        sweep_interval=max(0.2, float(_get(environ, "STORAGE_SWEEP_INTERVAL", str(DEFAULT_SWEEP_INTERVAL)))),
        sweep_batch=max(1, int(_get(environ, "STORAGE_SWEEP_BATCH", "100"))),
        claim_seconds=max(10, int(_get(environ, "STORAGE_SWEEP_CLAIM_SECONDS", "600"))),
        # A live upload writes at least every HTTP_SOCKET_TIMEOUT (60 s) or is cut off: ten idle minutes is a crash.
        tmp_max_age=max(1.0, float(_get(environ, "STORAGE_TMP_MAX_AGE", "600"))),
    )
