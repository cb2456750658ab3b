"""The gateway's request publisher: declares the workers' request queues before any request is accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kombu import Queue
from nameko.events import EventDispatcher
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from services.api_gateway.quotas import QuotaSettings, load_quota_settings
from shared import contracts
from shared.config import load_settings
from shared.db import make_engine

T = TypeVar("T")

# event type -> the durable queue of the worker that handles it (see shared.contracts.handler_queue)
REQUEST_QUEUES = {contracts.EXPORT_REQUESTED: contracts.EXPORT_REQUEST_QUEUE,
                  contracts.IMPORT_REQUESTED: contracts.IMPORT_REQUEST_QUEUE}

# The handlers of the job outcomes, named alike in the mailer and the webhooks service (their service.py).
_JOB_OUTCOME_HANDLERS = (
    (contracts.EXPORTER, contracts.EXPORT_COMPLETED, "on_export_completed"),
    (contracts.EXPORTER, contracts.EXPORT_FAILED, "on_export_failed"),
    (contracts.IMPORTER, contracts.IMPORT_COMPLETED, "on_import_completed"),
    (contracts.IMPORTER, contracts.IMPORT_FAILED, "on_import_failed"),
)


def _handler_queues(service: str, handlers: tuple[tuple[str, str, str], ...]) -> dict[tuple[str, str], str]:
    return {(source, event_type): contracts.handler_queue(source, event_type, service, method)
            for source, event_type, method in handlers}


# (source service, event type) -> the subscriber's handler queue: completion events the exporter or importer publish
# before the mailer or the webhooks service ever ran must wait for them too.
MAIL_QUEUES = _handler_queues(contracts.MAILER, _JOB_OUTCOME_HANDLERS)
WEBHOOK_QUEUES = _handler_queues(contracts.WEBHOOKS, (
    *_JOB_OUTCOME_HANDLERS, (contracts.STORAGE, contracts.OBJECT_EXPIRED, "on_object_expired")))


class RequestDispatcher(EventDispatcher):
    """An EventDispatcher that never drops a request.

    Events published before a subscriber's queue exists are silently dropped (docs/architecture.md fact 2), so at
    start-up the gateway declares each worker's queue exactly as nameko would, and publishes with ``mandatory`` so
    that an unroutable request is an error for the caller, never a silent loss.
    """

    def __init__(self) -> None:
        super().__init__(mandatory=True)

    def setup(self) -> None:
        exchange = get_event_exchange(self.container.service_name, self.container.config)
        for event_type, queue_name in REQUEST_QUEUES.items():
            self.declare.append(
                Queue(queue_name, exchange=exchange, routing_key=event_type, durable=True, auto_delete=False)
            )
        for (source, event_type), queue_name in [*MAIL_QUEUES.items(), *WEBHOOK_QUEUES.items()]:
            # The other services' exchanges, declared with nameko's own arguments so their declarations agree.
            source_exchange = get_event_exchange(source, self.container.config)
            self.declare.append(
                Queue(queue_name, exchange=source_exchange, routing_key=event_type, durable=True, auto_delete=False)
            )
        super().setup()


class Quotas(DependencyProvider):
    """``quotas.QuotaSettings`` read from the environment when the container starts."""

    def setup(self) -> None:
        self.settings = load_quota_settings()

    def get_dependency(self, worker_ctx: Any) -> QuotaSettings:
        return self.settings


def row_reader(engine: Engine) -> Callable[[Callable[[Connection], Any]], Any]:
    """``read(statement)``: ``statement(conn)`` on a connection of ``engine``, tried once more after the database
    dropped the connection (a restart: the pool then discards every connection older than the failure)."""
    def once(statement: Callable[[Connection], T]) -> T:
        with engine.connect() as conn:
            return statement(conn)

    def read(statement: Callable[[Connection], T]) -> T:
        try:
            return once(statement)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return once(statement)

    return read


class RowReader(DependencyProvider):
    """Reads of one statement for the most frequent routes (a task poll): ``read(lambda conn: ...)``.

    A pool of its own, in autocommit and without the check of each connection as it is taken: one round trip to the
    database per read instead of five (ping, BEGIN, the statement, ROLLBACK on return); a connection the database
    dropped fails its statement instead, which ``row_reader`` tries once more. Half of ``MAX_WORKERS`` connections
    at most, held for one statement each (deploy/README.md counts them in the connection budget).
    """

    def setup(self) -> None:
        size = max(2, self.container.max_workers // 2)
        self.engine = make_engine(load_settings().database_url, pool_size=size, max_overflow=0, pre_ping=False,
                                  autocommit=True)
        self.read = row_reader(self.engine)

    def stop(self) -> None:
        self.engine.dispose()

    def get_dependency(self, worker_ctx: Any) -> Callable[[Callable[[Connection], Any]], Any]:
        return self.read
