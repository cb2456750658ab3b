"""API gateway entrypoints: parse (``schemas``), call the route's module, respond. Who may do what: ``rules``;
how other services' errors answer: ``errors``; the modules' view of the dependencies: ``context.Gateway``."""

from __future__ import annotations

from typing import Any

from nameko.events import event_handler
from nameko.rpc import RpcProxy
from nameko.timer import timer
from werkzeug import Request, Response

from services.api_gateway import (
    admin,
    events,
    exports,
    feeds,
    health,
    imports,
    login,
    media_uploads,
    roles,
    schemas,
    tasks,
    webhooks,
)
from services.api_gateway.api_docs import serve as serve_contract
from services.api_gateway.context import Gateway
from services.api_gateway.dependencies import Quotas, RequestDispatcher, RowReader
from services.api_gateway.rules import Caller, require_admin
from shared import contracts
from shared.dependencies import Config, Database, MetricsServer, TaskLogContext
from shared.http import http, json_response, parse_json
from shared.rpc import call
from shared.storage_client import Storage

HEALTH_TIMEOUT = 3.0


def _body(request: Request) -> Any:
    return parse_json(request.get_data(cache=False))


class ApiGatewayService:
    name = contracts.GATEWAY

    config = Config()
    quota = Quotas()
    db = Database()
    reader = RowReader()
    dispatch = RequestDispatcher()
    storage = Storage(expiration=10)
    exporter = RpcProxy("exporter", expiration=HEALTH_TIMEOUT)
    importer = RpcProxy("importer", expiration=HEALTH_TIMEOUT)
    mailer = RpcProxy("mailer", expiration=HEALTH_TIMEOUT)
    webhooks = RpcProxy(contracts.WEBHOOKS, expiration=HEALTH_TIMEOUT)
    log_context, metrics_server = TaskLogContext(), MetricsServer()  # task ids in the job handlers' logs; METRICS_PORT

    @property
    def gw(self) -> Gateway:
        return Gateway(db=self.db, config=self.config, quota=self.quota, dispatch=self.dispatch, storage=self.storage,
                       read=self.reader,
                       mailer=lambda name, /, *a: call(self.mailer, name, *a, timeout=self.config.rpc_timeout),
                       webhooks=lambda name, /, *a: call(self.webhooks, name, *a, timeout=self.config.rpc_timeout))

    def _admin(self, request: Request, what: str) -> Caller:
        caller = self.gw.caller(request)
        require_admin(caller, what)
        return caller

    @http("POST", "/v1/auth/login")
    def login(self, request: Request) -> Response:
        body = schemas.parse(schemas.LoginSchema(), _body(request))
        return login.login_route(self.gw, request, body["email"], body["password"])

    @http("GET", "/v1/me")
    def me(self, request: Request) -> Response:
        caller = self.gw.caller(request)
        return json_response({"id": caller.id, "email": caller.email, "is_admin": caller.is_admin})

    @http("GET", "/v1/events")
    def list_events(self, request: Request) -> Response:
        return events.list_events(self.gw, request, self.gw.caller(request))

    @http("GET", "/v1/events/<int:event_id>")
    def get_event(self, request: Request, event_id: int) -> Response:
        return events.get_event(self.gw, self.gw.caller(request), event_id)

    @http("PUT", "/v1/events/<int:event_id>/publication")
    def set_publication(self, request: Request, event_id: int) -> Response:
        published = schemas.parse(schemas.PublicationSchema(), _body(request))["published"]
        return events.set_publication(self.gw, self.gw.caller(request), event_id, published)

    @http("GET", "/v1/formats")
    def list_formats(self, request: Request) -> Response:
        return exports.list_formats()

    @http("POST", "/v1/events/<int:event_id>/export/<format>")
    def request_export(self, request: Request, event_id: int, format: str) -> Response:  # noqa: A002
        caller = self.gw.caller(request)
        exports.check_format(format)  # before the body: the path names a format that does not exist
        return exports.request_export(self.gw, caller, event_id, format, *schemas.export_request(_body(request)))

    @http("GET", "/v1/events/<int:event_id>/schedule.<extension>")
    def schedule_feed(self, request: Request, event_id: int, extension: str) -> Response:
        return feeds.schedule_feed(self.gw, request, event_id, extension)  # public: no caller

    @http("GET,POST", "/v1/events/<int:event_id>/roles")
    def event_roles(self, request: Request, event_id: int) -> Response:
        caller = self.gw.caller(request)
        if request.method == "GET":
            return roles.list_roles(self.gw, request, caller, event_id)
        body = schemas.parse(schemas.RoleGrantSchema(), _body(request))
        return roles.add_role(self.gw, caller, event_id, body["email"], body["role"])

    @http("DELETE", "/v1/events/<int:event_id>/roles/<int:user_id>")
    def remove_event_role(self, request: Request, event_id: int, user_id: int) -> Response:
        caller = self.gw.caller(request)
        role = schemas.parse(schemas.RoleQuerySchema(), request.args)["role"]
        return roles.remove_role(self.gw, caller, event_id, user_id, role)

    @http("GET", "/v1/tasks")
    def list_tasks(self, request: Request) -> Response:
        caller = self.gw.caller(request)
        filters = schemas.parse(schemas.TaskListQuerySchema(), request.args)
        return tasks.list_tasks(self.gw, request, caller, filters)

    @http("GET", "/v1/tasks/<task_id>")
    def get_task(self, request: Request, task_id: str) -> Response:
        return tasks.get_task(self.gw, request, task_id)

    @http("GET", "/v1/events/<int:event_id>/exports")
    def list_exports(self, request: Request, event_id: int) -> Response:
        return exports.list_exports(self.gw, request, self.gw.caller(request), event_id)

    @http("GET", "/v1/events/<int:event_id>/exports/<path:path>")
    def download_export(self, request: Request, event_id: int, path: str) -> Response:
        return exports.download(self.gw, self.gw.caller(request), event_id, path)

    @http("DELETE", "/v1/events/<int:event_id>/exports/<path:path>")
    def delete_export(self, request: Request, event_id: int, path: str) -> Response:
        return exports.delete(self.gw, self.gw.caller(request), event_id, path)

    @http("GET", "/v1/storage-backends")
    def storage_backend_choices(self, request: Request) -> Response:
        self.gw.caller(request)  # any logged-in user
        return exports.backend_choices(self.gw, request)

    @http("POST", "/v1/events/import/<string:fmt>", stream=True)
    def request_import(self, request: Request, fmt: str) -> Response:
        caller = self.gw.caller(request)
        # parsed before the upload: a typo costs no transfer
        strict = schemas.parse(schemas.ImportQuerySchema(), request.args)["strict"]
        return imports.request_import(self.gw, caller, request, strict, imports.import_format(fmt))

    @http("GET", "/v1/import-jobs")
    def list_imports(self, request: Request) -> Response:
        return imports.list_imports(self.gw, request, self.gw.caller(request))

    @http("POST", "/v1/upload/file", stream=True)
    @http("POST", "/v1/upload/files", stream=True)  # the Open Event Server's path for the same endpoint
    def upload_file(self, request: Request) -> Response:
        return self._upload(request, "file")

    @http("POST", "/v1/upload/image", stream=True)
    def upload_image(self, request: Request) -> Response:
        return self._upload(request, "image")

    def _upload(self, request: Request, kind: media_uploads.Kind) -> Response:
        caller = self.gw.caller(request)
        force_local = schemas.parse(schemas.UploadQuerySchema(), request.args)["force_local"]
        return media_uploads.upload(self.gw, caller, request, kind, force_local)

    @http("GET", "/media/<path:key>")
    def media(self, request: Request, key: str) -> Response:
        return media_uploads.serve_media(self.gw, key)

    @http("GET", "/v1/admin/mails")
    def list_mails(self, request: Request) -> Response:
        self._admin(request, admin.MAIL_LOG)
        return admin.mail_log(self.gw, request)

    @http("GET", "/v1/admin/storage-backends")
    def list_storage_backends(self, request: Request) -> Response:
        self._admin(request, admin.BACKENDS)
        return admin.list_backends(self.gw, request)

    @http("POST", "/v1/admin/storage-backends")
    def create_storage_backend(self, request: Request) -> Response:
        self._admin(request, admin.BACKENDS)
        return admin.create_backend(self.gw, _body(request))

    @http("GET,PATCH,DELETE", "/v1/admin/storage-backends/<identifier>")
    def storage_backend(self, request: Request, identifier: str) -> Response:
        self._admin(request, admin.BACKENDS)
        if request.method == "PATCH":
            return admin.update_backend(self.gw, identifier, _body(request))
        if request.method == "DELETE":
            return admin.deactivate_backend(self.gw, identifier)
        return admin.get_backend(self.gw, identifier)

    @http("GET,POST", "/v1/webhooks")
    def webhooks_list(self, request: Request) -> Response:
        caller = self.gw.caller(request)
        if request.method == "POST":
            return webhooks.create(self.gw, caller, _body(request))
        return webhooks.list_webhooks(self.gw, caller, request)

    @http("GET,DELETE", "/v1/webhooks/<int:webhook_id>")
    def webhook(self, request: Request, webhook_id: int) -> Response:
        caller = self.gw.caller(request)
        if request.method == "DELETE":
            return webhooks.delete(self.gw, caller, webhook_id)
        return webhooks.get(self.gw, caller, webhook_id)

    @http("GET", "/v1/webhooks/<int:webhook_id>/deliveries")
    def webhook_deliveries(self, request: Request, webhook_id: int) -> Response:
        return webhooks.deliveries(self.gw, self.gw.caller(request), request, webhook_id)

    @http("GET", "/health")
    def health(self, request: Request) -> Response:
        proxies = {"storage": self.storage.proxy, "exporter": self.exporter, "importer": self.importer,
                   "mailer": self.mailer, "webhooks": self.webhooks}
        return health.system_health(self.gw, lambda name: call(proxies[name], "health", timeout=HEALTH_TIMEOUT))

    @http("GET", "/openapi.json")
    @http("GET", "/docs")
    @http("GET", "/docs/<asset>")
    def api_contract(self, request: Request, asset: str | None = None) -> Response:  # public: no caller
        return serve_contract(request.path, asset, self.config.gateway_url)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_STARTED)
    @event_handler(contracts.IMPORTER, contracts.IMPORT_STARTED)
    def on_job_started(self, payload: dict[str, Any]) -> None:
        tasks.record_status(self.gw, payload["task_id"], contracts.STARTED)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_PROGRESS)
    def on_export_progress(self, payload: dict[str, Any]) -> None:
        tasks.on_progress(self.gw, contracts.EXPORT_PROGRESS, payload)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_COMPLETED)
    def on_export_completed(self, payload: dict[str, Any]) -> None:
        exports.on_completed(self.gw, payload)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_FAILED)
    def on_export_failed(self, payload: dict[str, Any]) -> None:
        exports.on_failed(self.gw, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_PROGRESS)
    def on_import_progress(self, payload: dict[str, Any]) -> None:
        tasks.on_progress(self.gw, contracts.IMPORT_PROGRESS, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_COMPLETED)
    def on_import_completed(self, payload: dict[str, Any]) -> None:
        imports.on_completed(self.gw, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_FAILED)
    def on_import_failed(self, payload: dict[str, Any]) -> None:
        imports.on_failed(self.gw, payload)

    @event_handler(contracts.STORAGE, contracts.OBJECT_EXPIRED)
    def on_object_expired(self, payload: dict[str, Any]) -> None:
        exports.on_object_expired(self.gw, payload)

    @timer(interval=60)
    def fail_stale_tasks(self) -> None:
        tasks.fail_stale_tasks(self.gw)
