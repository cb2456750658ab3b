"""The storage service's backends: the default one (configured by environment) and the backend records.

Records live in the database (``storage_backends``); any storage instance reads them when it needs one, so a record
created or changed through the admin API is seen at once by every instance. Built backends are cached per record and
rebuilt when the record's kind, config or token changes. Client libraries are imported when a backend of their kind
is first built (after eventlet's monkey patch, as boto3 needs: docs/architecture.md fact 7).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.storage.backends.base import ObjectBackend
from services.storage.records.config import DEFAULT_ID, LOCAL_ID, InvalidBackendConfig
from services.storage.settings import StorageSettings
from services.storage.types import InactiveBackend, UnknownBackend
from shared.models import StorageBackendRecord

# SigV4 (S3 and GCS) presigned URLs live at most 7 days; longer links go through the data plane.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class BackendSpec:
    identifier: str
    kind: str
    config: dict[str, Any] = field(repr=False)
    token: str | None = field(repr=False)
    keep_days: int
    active: bool

    @property
    def fingerprint(self) -> str:
        """Changes whenever what the backend is built from changes (not keep_days or active)."""
        material = json.dumps([self.kind, self.config, self.token], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()

    @classmethod
    def from_record(cls, record: StorageBackendRecord) -> BackendSpec:
        return cls(record.storage_backend_id, record.storage_backend, dict(record.config or {}), record.token,
                   record.keep_days, record.active)


def build_backend(spec: BackendSpec, storage_dir: Path) -> ObjectBackend:
    """A backend object for ``spec`` (no network traffic); a config the client library refuses is a ValueError."""
    c = spec.config
    if spec.kind == "local":
        from services.storage.backends.local import LocalBackend

        # Records get a directory of their own under STORAGE_DIR: the API never chooses filesystem paths.
        builtin = spec.identifier in (DEFAULT_ID, LOCAL_ID)
        root = storage_dir if builtin else storage_dir / "backends" / spec.identifier
        return LocalBackend(root)
    if spec.kind == "s3":
        from services.storage.backends.s3 import S3Backend, S3Config

        extra = {k: c[k] for k in ("part_size", "addressing_style") if k in c}
        return S3Backend(S3Config(
            bucket=c["bucket"], endpoint_url=c.get("endpoint_url"), region=c.get("region") or "us-east-1",
            access_key_id=c.get("access_key_id"), secret_access_key=spec.token,
            public_endpoint_url=c.get("public_endpoint_url"), prefix=c.get("prefix", ""), **extra,
        ))
    if spec.kind == "gcs":
        from services.storage.backends.gcs import GcsBackend, GcsConfig

        extra = {"chunk_size": c["chunk_size"]} if "chunk_size" in c else {}
        return GcsBackend(GcsConfig(
            bucket=c["bucket"], project=c.get("project"), credentials_file=c.get("credentials_file"),
            anonymous=bool(c.get("anonymous")), api_endpoint=c.get("api_endpoint"),
            public_endpoint=c.get("public_endpoint"), signing_credentials_file=c.get("signing_credentials_file"),
            credentials_json=spec.token, prefix=c.get("prefix", ""), **extra,
        ))
    if spec.kind == "dropbox":
        from services.storage.backends.dropbox import DropboxBackend, DropboxConfig

        return DropboxBackend(DropboxConfig(
            app_key=c["app_key"], app_secret=c["app_secret"], refresh_token=spec.token or "",
            root=c.get("root", "/portability"), api_host=c.get("api_host"), content_host=c.get("content_host"),
            ca_certs=c.get("ca_certs"),
        ))
    if spec.kind == "seafile":
        from services.storage.backends.seafile import SeafileBackend, SeafileConfig

        return SeafileBackend(SeafileConfig(
            server_url=c["server_url"], token=spec.token or "", repo_id=c["repo_id"],
            root=c.get("root", "/portability"), ca_certs=c.get("ca_certs"),
        ))
    raise InvalidBackendConfig(f"unknown storage backend kind {spec.kind!r}")


def check_buildable(spec: BackendSpec, storage_dir: Path) -> None:
    """Raise ``InvalidBackendConfig`` if the client library refuses the config (bad key file, part sizes...)."""
    try:
        build_backend(spec, storage_dir)
    except InvalidBackendConfig:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        # The message of a parse error never carries the secret itself; its type is enough for the admin.
        raise InvalidBackendConfig(f"The {spec.kind} client refused this configuration ({type(exc).__name__}).") \
            from None


class Registry:
    """Backends by identifier: ``default`` (or ``None``) is the environment's, ``local`` the filesystem under
    ``STORAGE_DIR`` (the default itself when that is local); anything else is a record."""

    def __init__(self, settings: StorageSettings, storage_dir: Path, db: sessionmaker[Session]) -> None:
        self.settings = settings
        self.storage_dir = storage_dir
        self._db = db
        self._default = BackendSpec(DEFAULT_ID, settings.backend_kind, settings.backend_config,
                                    settings.backend_token, settings.keep_days, True)
        self._local = self._default if settings.backend_kind == "local" else BackendSpec(
            LOCAL_ID, "local", {}, None, settings.keep_days, True)
        self._cache: dict[str, tuple[str, ObjectBackend]] = {}
        self._default_backend = self.backend(self._default)

    @property
    def default_spec(self) -> BackendSpec:
        return self._default

    @property
    def default_backend(self) -> ObjectBackend:
        return self._default_backend

    def spec(self, identifier: str | None, session: Session | None = None) -> BackendSpec | None:
        """The spec of ``identifier`` whether active or not; ``None`` if there is no such record."""
        if identifier is None or identifier == DEFAULT_ID:
            return self._default
        if identifier == LOCAL_ID:
            return self._local
        if session is None:
            with self._db() as own:
                return self.spec(identifier, own)
        record = session.scalar(select(StorageBackendRecord).where(
            StorageBackendRecord.storage_backend_id == identifier))
        return None if record is None else BackendSpec.from_record(record)

    def writable(self, identifier: str | None, session: Session | None = None) -> BackendSpec:
        """The spec new objects may go to: known and active."""
        spec = self.spec(identifier, session)
        if spec is None:
            raise UnknownBackend(f"There is no storage backend {identifier!r}.")
        if not spec.active:
            raise InactiveBackend(f"Storage backend {identifier!r} is inactive.")
        return spec

    def backend(self, spec: BackendSpec) -> ObjectBackend:
        cached = self._cache.get(spec.identifier)
        fingerprint = spec.fingerprint
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        backend = build_backend(spec, self.storage_dir)
        purge = getattr(backend, "purge_temp_files", None)
        if purge is not None:
            # Uploads cut short by a crash (kill -9) cannot clean up after themselves: sweep the old ones.
            purge()
        self._cache[spec.identifier] = (fingerprint, backend)
        return backend

    def resolve(self, identifier: str | None, session: Session | None = None) -> tuple[BackendSpec, ObjectBackend]:
        """The spec and backend an existing object lives in (an unknown record is ``UnknownBackend``)."""
        spec = self.spec(identifier, session)
        if spec is None:
            raise UnknownBackend(f"There is no storage backend {identifier!r}.")
        return spec, self.backend(spec)
