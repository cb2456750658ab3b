"""The ``storage`` service: RPC control plane (signed URLs, stat, delete, health) and the HTTP data plane.

Bytes only ever move over HTTP (``/objects/<key>``); RPC carries keys, URLs and small JSON.
"""

from __future__ import annotations

from nameko.rpc import rpc
from werkzeug.wrappers import Request, Response

from services.storage import data_plane
from services.storage.dependencies import AppSettings, StorageBackend
from services.storage.local_backend import InvalidKey
from shared.http import http, json_response


class StorageService:
    name = "storage"

    settings = AppSettings()
    backend = StorageBackend()

    # -- control plane (RPC) ---------------------------------------------------------------------------------------

    @rpc(expected_exceptions=(InvalidKey, ValueError))
    def signed_url(self, key: str, method: str = "GET", ttl: int | None = None, filename: str | None = None) -> str:
        ttl = self.settings.signed_url_ttl if ttl is None else ttl
        return data_plane.signed_url(
            self.settings.storage_url, self.settings.secret_key, key, method=method, ttl=ttl, filename=filename
        )

    @rpc(expected_exceptions=InvalidKey)
    def stat(self, key: str) -> dict | None:
        info = self.backend.stat(key)
        return None if info is None else info.to_dict()

    @rpc(expected_exceptions=InvalidKey)
    def delete(self, key: str) -> bool:
        return self.backend.delete(key)

    @rpc
    def health(self) -> dict:
        backend = self.backend
        return {"status": "ok", "service": self.name, "backend": backend.name, "free_bytes": backend.free_bytes()}

    # -- data plane (HTTP) -----------------------------------------------------------------------------------------

    @http("PUT", "/objects/<path:key>")
    def put_object(self, request: Request, key: str) -> Response:
        data_plane.check_link(self.settings.secret_key, "PUT", key, request.args)
        return data_plane.receive_object(self.backend, key, request)

    @http("GET,HEAD", "/objects/<path:key>")
    def get_object(self, request: Request, key: str) -> Response:
        data_plane.check_link(self.settings.secret_key, "GET", key, request.args)
        return data_plane.serve_object(self.backend, key, request)

    @http("GET", "/health")
    def http_health(self, request: Request) -> Response:
        return json_response(self.health())
