"""Webhooks: POSTs a signed message to registered endpoints when an export or import ends or an archive expires
(Standard Webhooks; logic in outbox.py, courier.py, sender.py; endpoints for the gateway in endpoints.py)."""

from __future__ import annotations

import logging
from typing import Any

from nameko.events import event_handler
from nameko.rpc import rpc
from nameko.timer import timer

from services.webhooks import endpoints, outbox
from services.webhooks.courier import Courier
from services.webhooks.dependencies import Guard, WebhookConfig
from shared import contracts, intake
from shared.dependencies import Config, Database, MetricsServer, TaskLogContext
from shared.models.base import utcnow

log = logging.getLogger(__name__)
MAX_PAGE = 200


class WebhooksService:
    name = contracts.WEBHOOKS

    config = Config()
    settings = WebhookConfig()
    guard = Guard()
    db = Database()
    log_context, metrics_server = TaskLogContext(), MetricsServer()  # task ids in the handlers' logs; METRICS_PORT

    # requeue_on_error: an event that could not be recorded (database down) goes back to its queue, not lost.
    @event_handler(contracts.EXPORTER, contracts.EXPORT_COMPLETED, requeue_on_error=True)
    def on_export_completed(self, payload: dict[str, Any]) -> None:
        self._record(contracts.EXPORT_COMPLETED, payload)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_FAILED, requeue_on_error=True)
    def on_export_failed(self, payload: dict[str, Any]) -> None:
        self._record(contracts.EXPORT_FAILED, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_COMPLETED, requeue_on_error=True)
    def on_import_completed(self, payload: dict[str, Any]) -> None:
        self._record(contracts.IMPORT_COMPLETED, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_FAILED, requeue_on_error=True)
    def on_import_failed(self, payload: dict[str, Any]) -> None:
        self._record(contracts.IMPORT_FAILED, payload)

    @event_handler(contracts.STORAGE, contracts.OBJECT_EXPIRED, requeue_on_error=True)
    def on_object_expired(self, payload: dict[str, Any]) -> None:
        self._record(contracts.OBJECT_EXPIRED, payload)

    @timer(interval=1)
    def deliver_due(self) -> None:
        Courier(db=self.db, settings=self.settings, guard=self.guard).run_due()

    @rpc
    def health(self) -> dict[str, Any]:
        return {"service": self.name, "status": "ok"}

    @rpc(expected_exceptions=(endpoints.InvalidWebhookUrl, endpoints.InvalidWebhookSecret))  # a client's 400
    def create_endpoint(self, spec: dict[str, Any], created_by: int) -> dict[str, Any]:
        """Raises ``InvalidWebhookUrl`` / ``InvalidWebhookSecret`` (the gateway answers 400)."""
        with self.db() as session:
            return endpoints.create(session, self.guard, spec, created_by)

    @rpc
    def get_endpoint(self, endpoint_id: int) -> dict[str, Any] | None:
        with self.db() as session:
            return endpoints.get(session, endpoint_id)

    @rpc
    def delete_endpoint(self, endpoint_id: int) -> bool:
        with self.db() as session:
            return endpoints.delete(session, endpoint_id)

    @rpc
    def list_endpoints(self, owner: int | None, limit: int, after: list[Any] | None) -> dict[str, Any]:
        with self.db() as session:
            return endpoints.list_endpoints(session, owner, max(1, min(int(limit), MAX_PAGE)), after)

    @rpc
    def list_deliveries(self, endpoint_id: int, limit: int, after: list[Any] | None) -> dict[str, Any]:
        with self.db() as session:
            return endpoints.list_deliveries(session, endpoint_id, max(1, min(int(limit), MAX_PAGE)), after)

    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        def step() -> None:
            contracts.load_payload(kind, payload)  # a contract breach is dropped, not delivered
            with self.db() as session:
                outbox.record_event(session, kind, payload, now=utcnow())

        intake.take(kind, step, log)
