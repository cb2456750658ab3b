"""API gateway: the HTTP API /v1, authentication, authorization per event role, and the tasks view."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import eventlet
from nameko.events import event_handler
from nameko.rpc import RpcProxy
from nameko.timer import timer
from sqlalchemy import select, update
from werkzeug import Request, Response

from services.api_gateway import auth, health, imports, login, mails, media_uploads, quotas, storage_admin, uploads
from services.api_gateway.dependencies import Quotas, RequestDispatcher
from services.api_gateway.permissions import current_user, require_event_manager, visible_events
from services.api_gateway.tasks import (
    archive_gone,
    create_task,
    export_entry,
    fail_stale,
    finish,
    set_status,
    task_view,
)
from shared import contracts as c
from shared import object_keys
from shared.archive import formats
from shared.dependencies import Config, Database
from shared.event_stats import record_counts
from shared.http import ApiError, http, json_response, parse_json
from shared.models import Task, utcnow
from shared.rpc import RpcTimeout, call
from shared.storage_client import Storage

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 3.0
SERVICES = ("storage", "exporter", "importer", "mailer")


def _json_body(request: Request) -> Any:
    return parse_json(request.get_data(cache=False))


def _export_options(body: Any) -> dict[str, bool]:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    unknown = sorted(set(body) - set(c.MEDIA_FLAGS))
    if unknown:  # "storage" was taken out before (storage_admin.export_storage) but is an option all the same
        raise ApiError(400, "invalid_request",
                       f"Unknown option(s) {', '.join(unknown)}; allowed: {', '.join((*c.MEDIA_FLAGS, 'storage'))}.")
    options = {}
    for flag in c.MEDIA_FLAGS:
        value = body.get(flag, False)
        if not isinstance(value, bool):
            raise ApiError(400, "invalid_request", f"Option '{flag}' must be true or false, not {json.dumps(value)}.")
        options[flag] = value
    return options


class ApiGatewayService:
    name = c.GATEWAY

    config = Config()
    quota = Quotas()
    db = Database()
    dispatch = RequestDispatcher()
    storage = Storage(expiration=10)
    exporter = RpcProxy("exporter", expiration=HEALTH_TIMEOUT)
    importer = RpcProxy("importer", expiration=HEALTH_TIMEOUT)
    mailer = RpcProxy("mailer", expiration=HEALTH_TIMEOUT)

    # --- authentication -------------------------------------------------------------------------------------------

    @http("POST", "/v1/auth/login")
    def login(self, request: Request) -> Response:
        body = _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("email"), str) \
                or not isinstance(body.get("password"), str):
            raise ApiError(400, "invalid_request", "Send {\"email\": ..., \"password\": ...} as JSON.")
        cfg = self.config
        address = login.client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                       cfg.trusted_proxies)
        limits = login.Limits(cfg.login_max_failures_per_account, cfg.login_max_failures_per_address,
                              cfg.login_failure_window)
        with self.db() as session:
            token = login.log_in(session, body["email"], body["password"], address, limits, cfg.token_key, cfg.jwt_ttl)
        return json_response({"access_token": token})

    def _user_id(self, request: Request) -> int:
        with self.db() as session:
            return auth.authenticate(session, request.headers.get("Authorization"), self.config.token_key)

    # --- events ---------------------------------------------------------------------------------------------------

    @http("GET", "/v1/events")
    def list_events(self, request: Request) -> Response:
        user_id = self._user_id(request)
        with self.db() as session:
            events = visible_events(session, current_user(session, user_id))
            return json_response({"data": [self._event_summary(e) for e in events]})

    @http("GET", "/v1/events/<int:event_id>")
    def get_event(self, request: Request, event_id: int) -> Response:
        user_id = self._user_id(request)
        with self.db() as session:
            event = require_event_manager(session, current_user(session, user_id), event_id)
            return json_response({**self._event_summary(event), "counts": record_counts(session, event_id)})

    @staticmethod
    def _event_summary(event: Any) -> dict[str, Any]:
        fmt = "%Y-%m-%dT%H:%M:%S"
        return {
            "id": event.id,
            "identifier": event.identifier,
            "name": event.name,
            "start_time": event.start_time.strftime(fmt) if event.start_time else None,
            "end_time": event.end_time.strftime(fmt) if event.end_time else None,
            "timezone": event.timezone,
        }

    # --- export ---------------------------------------------------------------------------------------------------

    @http("GET", "/v1/formats")
    def list_formats(self, request: Request) -> Response:
        """The export formats (``shared/archive/formats.py``): public, like the formats of a file dialog."""
        return json_response({"data": formats.describe_formats()})

    @http("POST", "/v1/events/<int:event_id>/export/<format>")
    def request_export(self, request: Request, event_id: int, format: str) -> Response:  # noqa: A002
        user_id = self._user_id(request)
        if format not in formats.FORMATS:
            raise ApiError(404, "unknown_format", str(formats.UnknownFormat(format)))
        body, storage = storage_admin.export_storage(_json_body(request))
        options = _export_options(body)
        with self.db() as session:
            user = current_user(session, user_id)
            require_event_manager(session, user, event_id)
            quotas.check_jobs_in_flight(session, user.id, self.quota.jobs_in_flight)
            if storage is not None:  # a named backend must exist and be active
                storage_admin.check_export_storage(self.storage, storage)
            task = create_task(session, kind="export", event_id=event_id, user_id=user.id, email=user.email,
                               params={"options": options, "format": format,
                                       **({"storage": storage} if storage else {})})
            payload = c.make_payload(c.EXPORT_REQUESTED, task_id=task.id, event_id=event_id,
                                     requested_by={"id": user.id, "email": user.email}, options=options, format=format,
                                     **({"storage": storage} if storage else {}))
            # Commit first: the exporter may answer before this request returns, and its events need the row.
            session.commit()
            try:
                self.dispatch(c.EXPORT_REQUESTED, payload)
            except Exception as exc:
                finish(session, task.id, c.FAILURE,
                       {"code": "broker_unavailable", "message": "The request could not be queued."})
                session.commit()
                raise ApiError(503, "broker_unavailable", "The export could not be queued; try again later.") from exc
            url = f"/v1/tasks/{task.id}"
        return json_response({"task_url": url}, status=202, headers={"Location": url})

    @http("GET", "/v1/tasks/<task_id>")
    def get_task(self, request: Request, task_id: str) -> Response:
        user_id = self._user_id(request)
        with self.db() as session:
            user = current_user(session, user_id)
            task = session.get(Task, task_id)
            if task is None:
                raise ApiError(404, "task_not_found", f"Task {task_id} does not exist.")
            if task.requested_by != user.id and not user.is_admin:
                raise ApiError(403, "forbidden", "Only the user who started a task and admins may see it.")
            return json_response(task_view(task))

    @http("GET", "/v1/events/<int:event_id>/exports")
    def list_exports(self, request: Request, event_id: int) -> Response:
        user_id = self._user_id(request)
        with self.db() as session:
            require_event_manager(session, current_user(session, user_id), event_id)
            tasks = session.scalars(
                select(Task).where(Task.kind == "export", Task.event_id == event_id).order_by(Task.created_at.desc())
            )
            return json_response({"data": [export_entry(t) for t in tasks]})

    @http("GET", "/v1/events/<int:event_id>/exports/<path:path>")
    def download_export(self, request: Request, event_id: int, path: str) -> Response:
        user_id = self._user_id(request)
        task_id = path.split("/", 1)[0]
        with self.db() as session:
            require_event_manager(session, current_user(session, user_id), event_id)
            task = session.get(Task, task_id)
            if task is None or task.kind != "export" or task.event_id != event_id:
                raise ApiError(404, "export_not_found", f"Event {event_id} has no export {task_id}.")
            if task.state != c.SUCCESS:
                raise ApiError(409, "export_not_ready", f"Export {task_id} is {task.state}, not SUCCESS.")
            key = task.result["key"]
        # 410 with the reason once the archive expired or was deleted; else the backend's own presigned URL where
        # it can sign (S3, GCS), or the storage data plane's.
        url = storage_admin.signed_download(self.storage, task_id, key, self.config.signed_url_ttl,
                                            object_keys.archive_filename(event_id))
        return Response(status=302, headers={"Location": url})

    @http("DELETE", "/v1/events/<int:event_id>/exports/<path:path>")
    def delete_export(self, request: Request, event_id: int, path: str) -> Response:
        """Remove an export's archive now (organizers and admins); its links then answer 410."""
        user_id = self._user_id(request)
        task_id = path.split("/", 1)[0]
        with self.db() as session:
            storage_admin.require_export_deleter(session, current_user(session, user_id), event_id)
            task = session.get(Task, task_id)
            if task is None or task.kind != "export" or task.event_id != event_id:
                raise ApiError(404, "export_not_found", f"Event {event_id} has no export {task_id}.")
            if task.state != c.SUCCESS:
                raise ApiError(409, "export_not_ready", f"Export {task_id} is {task.state}: it has no archive.")
            key = task.result["key"]
        storage_admin.delete_archive(self.storage, key)
        with self.db() as session:  # at once, not only when storage's object_expired event arrives
            archive_gone(session, task_id, key, "deleted", c.utc_iso())
            session.commit()
        return Response(status=204)

    # --- import ---------------------------------------------------------------------------------------------------

    @http("POST", "/v1/events/import/json", stream=True)
    def request_import(self, request: Request) -> Response:
        user_id = self._user_id(request)
        strict = imports.parse_strict(request.args.get("strict"))  # before the upload: a typo costs no transfer
        with self.db() as session:  # not held open during the upload
            user = current_user(session, user_id)
            requester = {"id": user.id, "email": user.email}
            quotas.check_jobs_in_flight(session, user.id, self.quota.jobs_in_flight)
        budget = self._byte_budget(requester["id"])
        budget.check_start(request.content_length)
        task_id = str(uuid.uuid4())

        # Counted against the uploader's byte quota; expires IMPORT_ARCHIVE_KEEP_DAYS after the upload unless the
        # end of the import (below) restarts the clock.
        store = imports.storage_writer(self.storage, task_id, meter=budget.meter, owner=requester["id"],
                                       keep_seconds=self.quota.import_archive_keep_seconds)
        upload = uploads.receive_archive(request, max_bytes=self.config.import_max_bytes, store=store)
        with self.db() as session:
            create_task(session, kind="import", event_id=None, user_id=requester["id"], email=requester["email"],
                        params=imports.task_params(upload, strict), task_id=task_id)
            payload = c.make_payload(c.IMPORT_REQUESTED, task_id=task_id, event_id=None, requested_by=requester,
                                     key=upload.key, filename=upload.filename, size=upload.size, strict=strict)
            session.commit()  # the importer may answer before this request returns
            try:
                self.dispatch(c.IMPORT_REQUESTED, payload)
            except Exception as exc:
                finish(session, task_id, c.FAILURE,
                       {"code": "broker_unavailable", "message": "The request could not be queued."})
                session.commit()
                raise ApiError(503, "broker_unavailable", "The import could not be queued; try again later.") from exc
        url = f"/v1/tasks/{task_id}"
        return json_response({"task_url": url}, status=202, headers={"Location": url})

    @http("GET", "/v1/import-jobs")
    def list_imports(self, request: Request) -> Response:
        user_id = self._user_id(request)
        with self.db() as session:
            user = current_user(session, user_id)
            tasks = session.scalars(select(Task).where(Task.kind == "import", Task.requested_by == user.id)
                                    .order_by(Task.created_at.desc()))
            return json_response({"data": [imports.import_entry(t) for t in tasks]})

    # --- upload API -----------------------------------------------------------------------------------------------

    @http("POST", "/v1/upload/file", stream=True)
    def upload_file(self, request: Request) -> Response:
        return self._upload(request, "file")

    @http("POST", "/v1/upload/files", stream=True)  # the Open Event Server's path for the same endpoint
    def upload_files(self, request: Request) -> Response:
        return self._upload(request, "file")

    @http("POST", "/v1/upload/image", stream=True)
    def upload_image(self, request: Request) -> Response:
        return self._upload(request, "image")

    def _upload(self, request: Request, kind: media_uploads.Kind) -> Response:
        """Files in ``file`` or ``files[]`` streamed to storage; answers their public ``/media/`` URLs."""
        user_id = self._user_id(request)
        force_local = media_uploads.parse_force_local(request.args.get("force_local"))
        with self.db() as session:  # not held open during the upload
            user_id = current_user(session, user_id).id
        budget = self._byte_budget(user_id)
        budget.check_start(request.content_length)

        multiple, stored = media_uploads.receive_uploads(
            request, kind=kind, max_bytes=media_uploads.max_bytes_for(kind, self.config), user_id=user_id,
            put=media_uploads.storage_put(self.storage, force_local=force_local, owner=user_id, meter=budget.meter),
            delete=self.storage.delete)
        return json_response(media_uploads.response_body(self.config.gateway_url, multiple, stored))

    def _byte_budget(self, user_id: int) -> quotas.ByteBudget:
        def stored_bytes(owner: int) -> int:
            try:
                return self.storage.stored_bytes(owner)
            except RpcTimeout as exc:
                raise ApiError(503, "storage_unavailable", "Storage is not answering; try again later.") from exc

        return quotas.budget_for(stored_bytes, user_id, self.quota)

    @http("GET", "/media/<path:key>")
    def media(self, request: Request, key: str) -> Response:
        """Media re-hosted by imports and files of the upload API: public (as the URLs they replace were),
        redirected to a fresh signed link."""
        url = media_uploads.media_redirect(self.storage, key, imports.MEDIA_LINK_TTL)
        return Response(status=302, headers={"Location": url,
                                             "Cache-Control": f"public, max-age={imports.MEDIA_REDIRECT_MAX_AGE}"})

    @http("GET", "/v1/storage-backends")
    def storage_backend_choices(self, request: Request) -> Response:
        """Any logged-in user: the backends an export may name in ``storage`` (identifiers and descriptions only)."""
        user_id = self._user_id(request)
        with self.db() as session:
            current_user(session, user_id)
        return json_response({"data": storage_admin.call_storage(self.storage.backend_choices)})

    # --- admin ----------------------------------------------------------------------------------------------------

    @http("GET", "/v1/admin/mails")
    def list_mails(self, request: Request) -> Response:
        """The mailer's recent deliveries and their states (admins only; no message bodies or links)."""
        user_id = self._user_id(request)
        with self.db() as session:
            mails.require_admin(current_user(session, user_id))
            limit = mails.parse_limit(request.args.get("limit"))
            return json_response({"data": mails.recent_deliveries(session, limit)})

    @http("GET", "/v1/admin/storage-backends")
    def list_storage_backends(self, request: Request) -> Response:
        """Backend records (admins only); tokens and secrets are never returned, only whether they are set."""
        self._require_admin(request)
        return json_response(storage_admin.call_storage(self.storage.list_backends))

    @http("POST", "/v1/admin/storage-backends")
    def create_storage_backend(self, request: Request) -> Response:
        self._require_admin(request)
        body = _json_body(request)
        record = storage_admin.call_storage(lambda: self.storage.create_backend(body))
        url = f"/v1/admin/storage-backends/{record['storage_backend_id']}"
        return json_response(record, status=201, headers={"Location": url})

    @http("GET", "/v1/admin/storage-backends/<identifier>")
    def get_storage_backend(self, request: Request, identifier: str) -> Response:
        self._require_admin(request)
        return json_response(storage_admin.describe(self.storage, identifier))

    @http("PATCH", "/v1/admin/storage-backends/<identifier>")
    def update_storage_backend(self, request: Request, identifier: str) -> Response:
        """Change keep_days, description, active, token or config keys (merged: secrets not sent are kept)."""
        self._require_admin(request)
        body = _json_body(request)
        return json_response(storage_admin.call_storage(lambda: self.storage.update_backend(identifier, body)))

    @http("DELETE", "/v1/admin/storage-backends/<identifier>")
    def deactivate_storage_backend(self, request: Request, identifier: str) -> Response:
        """Deactivate (records are never removed: objects stored there stay readable and keep expiring)."""
        self._require_admin(request)
        return json_response(storage_admin.call_storage(lambda: self.storage.deactivate_backend(identifier)))

    def _require_admin(self, request: Request) -> None:
        user_id = self._user_id(request)
        with self.db() as session:
            storage_admin.require_admin(current_user(session, user_id))

    # --- health ---------------------------------------------------------------------------------------------------

    @http("GET", "/health")
    def health(self, request: Request) -> Response:
        proxies = {"storage": self.storage.proxy, "exporter": self.exporter, "importer": self.importer,
                   "mailer": self.mailer}
        pool = eventlet.GreenPool()
        broker = pool.spawn(health.check_broker, self.config.amqp_uri)
        services = pool.spawn(health.check_services,
                              lambda name: call(proxies[name], "health", timeout=HEALTH_TIMEOUT), SERVICES)
        with self.db() as session:
            database = health.check_database(session.get_bind())
        report = {"broker": broker.wait(), "database": database, "services": services.wait()}
        reasons = health.problems(report)
        body = {"status": "degraded" if reasons else "ok", **({"reasons": reasons} if reasons else {}), **report}
        return json_response(body, status=503 if reasons else 200)

    # --- status events --------------------------------------------------------------------------------------------

    @event_handler(c.EXPORTER, c.EXPORT_STARTED)
    def on_export_started(self, payload: dict[str, Any]) -> None:
        self._set_status(payload["task_id"], c.STARTED)

    @event_handler(c.EXPORTER, c.EXPORT_PROGRESS)
    def on_export_progress(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.EXPORT_PROGRESS, payload)
        self._set_status(data["task_id"], c.IN_PROGRESS,
                         progress={"stage": data["stage"], "done": data["done"], "total": data["total"]})

    @event_handler(c.EXPORTER, c.EXPORT_COMPLETED)
    def on_export_completed(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.EXPORT_COMPLETED, payload)
        result = {k: data[k] for k in ("download_url", "size", "sha256", "expires_at", "key", "warnings",
                                        "warnings_total", "retention")}
        self._finish(data["task_id"], c.SUCCESS, result)

    @event_handler(c.EXPORTER, c.EXPORT_FAILED)
    def on_export_failed(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.EXPORT_FAILED, payload)
        self._finish(data["task_id"], c.FAILURE, {"code": data["code"], "message": data["message"]})

    @event_handler(c.IMPORTER, c.IMPORT_STARTED)
    def on_import_started(self, payload: dict[str, Any]) -> None:
        self._set_status(payload["task_id"], c.STARTED)

    @event_handler(c.IMPORTER, c.IMPORT_PROGRESS)
    def on_import_progress(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.IMPORT_PROGRESS, payload)
        self._set_status(data["task_id"], c.IN_PROGRESS, progress={"stage": data["stage"], "done": data["done"],
                                                                   "total": data["total"], "phase": data["phase"]})

    @event_handler(c.IMPORTER, c.IMPORT_COMPLETED)
    def on_import_completed(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.IMPORT_COMPLETED, payload)
        with self.db() as session:
            if finish(session, data["task_id"], c.SUCCESS, imports.completed_result(data)):
                session.execute(update(Task).where(Task.id == data["task_id"]).values(event_id=data["id"]))
            session.commit()
        self._expire_import_archive(data["task_id"])

    @event_handler(c.IMPORTER, c.IMPORT_FAILED)
    def on_import_failed(self, payload: dict[str, Any]) -> None:
        data = c.load_payload(c.IMPORT_FAILED, payload)
        self._finish(data["task_id"], c.FAILURE, imports.failed_result(data))
        self._expire_import_archive(data["task_id"])

    @event_handler(c.STORAGE, c.OBJECT_EXPIRED)
    def on_object_expired(self, payload: dict[str, Any]) -> None:
        """An export's archive was deleted or expired: its task and history stop offering the link."""
        data = c.load_payload(c.OBJECT_EXPIRED, payload)
        if data["task_id"] is None:
            return
        when = data["deleted_at"] if data["reason"] == "deleted" else (data["expires_at"] or data["deleted_at"])
        with self.db() as session:
            archive_gone(session, data["task_id"], data["key"], data["reason"], when)
            session.commit()

    def _expire_import_archive(self, task_id: str) -> None:
        """The import ended: its archive goes IMPORT_ARCHIVE_KEEP_DAYS from now (re-hosted media stay)."""
        with self.db() as session:
            key = imports.archive_key(session.get(Task, task_id))
        if key is None:
            return
        try:
            self.storage.expire_after(key, self.quota.import_archive_keep_seconds)
        except Exception:  # the expiry set at upload still applies: the archive goes at most a little later
            log.warning("could not restart the expiry of import archive %s", key, exc_info=True)

    @timer(interval=60)
    def fail_stale_tasks(self) -> None:
        with self.db() as session:
            fail_stale(session, utcnow() - timedelta(seconds=self.config.stale_task_seconds))
            session.commit()

    def _set_status(self, task_id: str, status: str, **values: Any) -> None:
        with self.db() as session:
            set_status(session, task_id, status, **values)
            session.commit()

    def _finish(self, task_id: str, state: str, result: dict[str, Any]) -> None:
        with self.db() as session:
            finish(session, task_id, state, result)
            session.commit()
