"""The ``storage`` service: RPC control plane (signed URLs, stat, delete, backend records, health), the HTTP data
plane, and the retention sweeper.

Bytes only ever move over HTTP (``/objects/<key>``, or a backend's own presigned URL); RPC carries keys, URLs and
small JSON. The work is done in plain modules: ``objects`` (links, store, serve, delete over every backend),
``records`` (the backend records and the registry that builds backends), ``retention`` (the sweeper). Other services
call it through ``shared.storage_client``, whose exception types carry the names of those raised here.
"""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.events import EventDispatcher
from nameko.rpc import rpc
from nameko.timer import timer
from werkzeug.wrappers import Request, Response

from services.storage import data_plane, object_index, objects, retention
from services.storage.dependencies import AppSettings, BackendRegistry, StorageBackend
from services.storage.records import admin
from services.storage.records.admin import BackendExists
from services.storage.records.config import InvalidBackendConfig
from services.storage.records.probe import BackendCheckFailed, check_backend
from services.storage.records.registry import BackendSpec, build_backend, check_buildable
from services.storage.settings import load_storage_settings
from services.storage.types import BackendError, InactiveBackend, InvalidKey, ObjectGone, ObjectNotFound, UnknownBackend
from shared.dependencies import Database, MetricsServer
from shared.http import http, json_response
from shared.models.base import utcnow

# Read when the module loads: nameko's timer takes its interval at class definition (STORAGE_SWEEP_INTERVAL).
SWEEP_INTERVAL = load_storage_settings().sweep_interval
RECORD_ERRORS = (InvalidBackendConfig, BackendCheckFailed, UnknownBackend, BackendExists)


class StorageService:
    name = "storage"

    settings = AppSettings()
    registry = BackendRegistry()
    backend = StorageBackend()  # the default backend alone
    db = Database()
    dispatch = EventDispatcher()
    metrics_server = MetricsServer()

    # -- control plane (RPC) ---------------------------------------------------------------------------------------

    @rpc(expected_exceptions=(InvalidKey, ValueError, UnknownBackend, InactiveBackend, ObjectGone, ObjectNotFound,
                              BackendError))
    def signed_url(self, key: str, method: str = "GET", ttl: int | None = None, filename: str | None = None,
                   backend: str | None = None, retention: bool = False, must_exist: bool = False,
                   data_plane_only: bool = False, owner: int | None = None, keep_seconds: int | None = None) -> str:
        """A link for ``key``. PUT: to the data plane, storing into ``backend`` (a record's ``storage_backend_id``,
        ``"local"`` for the filesystem under STORAGE_DIR, ``None`` for the default; it must be active), following
        its keep days if ``retention`` (or expiring ``keep_seconds`` after it is stored), counted against the byte
        quota of user ``owner``. GET: presigned by the object's backend where it can, else the data plane's;
        ``data_plane_only`` always gives the data plane's (for services reading platform objects). ``ObjectGone``
        once the object expired or was deleted; with ``must_exist``, ``ObjectNotFound`` if it never existed."""
        return objects.signed_url(self.registry, self.db, self.settings, key, method=method, ttl=ttl,
                                  filename=filename, backend=backend, retention=retention, must_exist=must_exist,
                                  data_plane_only=data_plane_only, owner=owner, keep_seconds=keep_seconds)

    @rpc
    def stored_bytes(self, owner: int) -> int:
        """Bytes user ``owner`` holds in storage now (uploads and import archives: the gateway's byte quota)."""
        with self.db() as session:
            return object_index.stored_bytes(session, owner)

    @rpc(expected_exceptions=ValueError)
    def expire_after(self, key: str, seconds: int) -> bool:
        """``key`` expires ``seconds`` from now (an import archive once its import ended); ``False`` if gone."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            raise ValueError("seconds must be a positive integer")
        with self.db() as session:
            changed = object_index.expire_after(session, key, seconds, utcnow())
            session.commit()
            return changed

    @rpc(expected_exceptions=(InvalidKey, BackendError))
    def stat(self, key: str) -> dict | None:
        return objects.stat(self.registry, self.db, key)

    @rpc(expected_exceptions=(InvalidKey, BackendError))
    def delete(self, key: str) -> bool:
        """Delete on request: links to the object then answer 410 and ``storage.object_expired`` says so."""
        return objects.delete(self.registry, self.db, self._publish, key)

    @rpc
    def health(self) -> dict:
        backend = self.backend
        free = getattr(backend, "free_bytes", None)
        return {"status": "ok", "service": self.name, "backend": backend.name,
                "free_bytes": free() if free is not None else None}

    # -- backend records (the gateway's admin API) -----------------------------------------------------------------

    # Both lists are paged here, where the records live (keyset; ``limit=None``: all of them): admins add records
    # and never delete them, so no bound on their number holds for ever.
    @rpc
    def list_backends(self, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        spec = self.registry.default_spec
        with self.db() as session:
            return {"data": admin.list_records(session, limit, after),
                    "default": {"storage_backend": spec.kind, "keep_days": spec.keep_days}}

    @rpc
    def backend_choices(self, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
        """The backends an export may name (the default and the active records), without config or secrets."""
        with self.db() as session:
            return admin.choices(session, self.registry.default_spec, limit, after)

    @rpc
    def describe_backend(self, identifier: str) -> dict[str, Any] | None:
        """The public view of a record (``None`` if unknown); ``default`` and ``local`` describe the built-ins."""
        spec = self.registry.spec(identifier) if identifier in ("default", "local") else None
        if spec is not None:
            return {"storage_backend": spec.kind, "storage_backend_id": identifier, "active": True,
                    "keep_days": spec.keep_days, "builtin": True}
        with self.db() as session:
            return admin.describe(session, identifier)

    @rpc(expected_exceptions=RECORD_ERRORS)
    def create_backend(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.db() as session:
            return admin.create(session, body, self._check_spec)

    @rpc(expected_exceptions=RECORD_ERRORS)
    def update_backend(self, identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.db() as session:
            return admin.update(session, identifier, body, self._check_spec)

    @rpc(expected_exceptions=RECORD_ERRORS)
    def deactivate_backend(self, identifier: str) -> dict[str, Any]:
        with self.db() as session:
            return admin.deactivate(session, identifier)

    def _check_spec(self, spec: BackendSpec, probe: bool) -> None:
        check_buildable(spec, self.registry.storage_dir)
        if probe:  # a fresh backend, not the registry's cache: the record is not saved yet
            check_backend(build_backend(spec, self.registry.storage_dir), spec.identifier, spec.kind,
                          self.settings.storage_probe_timeout)

    # -- retention ---------------------------------------------------------------------------------------------------

    @timer(interval=SWEEP_INTERVAL)
    def sweep_expired(self) -> None:
        """Delete expired objects (several instances may sweep at once), publish storage events still due, and remove
        the parts of uploads a crash left behind."""
        settings = self.registry.settings
        retention.sweep(self.db, self.registry, self._publish, batch=settings.sweep_batch,
                        claim_seconds=settings.claim_seconds)
        retention.purge_partial_uploads(self.registry.storage_dir, settings.tmp_max_age)

    def _publish(self, event_type: str, payload: dict[str, Any]) -> None:
        self.dispatch(event_type, payload)

    # -- data plane (HTTP) -----------------------------------------------------------------------------------------

    # Writers hold signed links (the exporter, the gateway relaying uploads it paces itself): bounded by silence.
    @http("PUT", "/objects/<path:key>", stream=True, paced=False)
    def put_object(self, request: Request, key: str) -> Response:
        data_plane.check_link(self.settings.link_key, "PUT", key, request.args)
        return objects.store(self.registry, self.db, self._publish, key, request)

    @http("POST", "/batches/<path:prefix>", stream=True, paced=False)
    def put_batch(self, request: Request, prefix: str) -> Response:
        """Many objects under ``prefix`` in one request (``shared.object_batch``), on a link signed for the prefix."""
        data_plane.check_batch_link(self.settings.link_key, prefix, request.args)
        return objects.store_batch(self.registry, self.db, self._publish, prefix, request, later=eventlet.spawn_n)

    @http("GET,HEAD", "/objects/<path:key>")
    def get_object(self, request: Request, key: str) -> Response:
        data_plane.check_link(self.settings.link_key, "GET", key, request.args)
        return objects.serve(self.registry, self.db, key, request)

    @http("GET", "/health")
    def http_health(self, request: Request) -> Response:
        return json_response(self.health())
