"""Mailer: tells the requester about every finished export or import, exactly once (logic in postman.py)."""

from __future__ import annotations

import logging
from typing import Any

from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc
from nameko.timer import timer

from services.mailer import delivery_health, mail_log
from services.mailer.dependencies import MailConfig, Smtp
from services.mailer.postman import Postman
from shared import contracts, intake
from shared.dependencies import Config, Database, MetricsServer, TaskLogContext

log = logging.getLogger(__name__)
MAIL_LOG_MAX = 500  # rows per recent_deliveries call


class MailerService:
    name = contracts.MAILER

    config = Config()
    mail_config = MailConfig()
    db = Database()
    smtp = Smtp()
    dispatch = EventDispatcher()
    log_context = TaskLogContext()
    metrics_server = MetricsServer()

    # requeue_on_error: an event that could not even be recorded (database down) goes back to the queue instead of
    # being acked and lost; everything past recording is handled inside the postman.
    @event_handler(contracts.EXPORTER, contracts.EXPORT_COMPLETED, requeue_on_error=True)
    def on_export_completed(self, payload: dict[str, Any]) -> None:
        self._notify(contracts.EXPORT_COMPLETED, payload)

    @event_handler(contracts.EXPORTER, contracts.EXPORT_FAILED, requeue_on_error=True)
    def on_export_failed(self, payload: dict[str, Any]) -> None:
        self._notify(contracts.EXPORT_FAILED, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_COMPLETED, requeue_on_error=True)
    def on_import_completed(self, payload: dict[str, Any]) -> None:
        self._notify(contracts.IMPORT_COMPLETED, payload)

    @event_handler(contracts.IMPORTER, contracts.IMPORT_FAILED, requeue_on_error=True)
    def on_import_failed(self, payload: dict[str, Any]) -> None:
        self._notify(contracts.IMPORT_FAILED, payload)

    @timer(interval=1)
    def retry_due(self) -> None:
        self._postman().run_due()

    @timer(interval=15)
    def announce_missed(self) -> None:
        self._postman().announce_missed()

    @rpc
    def health(self) -> dict[str, Any]:
        """Alive, plus whether mail is being delivered (``delivery``); ``status`` is ``degraded`` when it is not."""
        delivery = delivery_health.report(self.db, self.smtp, self.mail_config)
        return {"service": self.name, "status": "ok" if delivery["ok"] else "degraded", "delivery": delivery}

    @rpc
    def recent_deliveries(self, limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` deliveries (states and errors, no bodies), older than ``before_id`` if given (the
        next page): the admin mail log of the gateway."""
        before = int(before_id) if before_id is not None else None
        with self.db() as session:
            return mail_log.recent_deliveries(session, max(1, min(int(limit), MAIL_LOG_MAX)), before)

    def _postman(self) -> Postman:
        return Postman(db=self.db, transport=self.smtp, settings=self.mail_config,
                       gateway_url=self.config.gateway_url, publish=self.dispatch)

    def _notify(self, kind: str, payload: dict[str, Any]) -> None:
        intake.take(kind, lambda: self._postman().notify(kind, payload), log)
