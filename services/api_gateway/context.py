"""What the gateway's route modules get for one request: built by ``service.py``, the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from werkzeug import Request

from services.api_gateway import auth, quotas
from services.api_gateway.errors import unavailable
from services.api_gateway.quotas import QuotaSettings
from services.api_gateway.rules import Caller
from shared.config import Settings
from shared.storage_client import StorageClient

# call(proxy, method, *args, timeout=...) bound to one service's proxy and the timeout of its kind of call
ServiceCall = Callable[..., Any]


@dataclass(frozen=True)
class Gateway:
    db: sessionmaker[Session]
    config: Settings
    quota: QuotaSettings
    storage: StorageClient
    mailer: ServiceCall  # call(mailer proxy, method, *args) within RPC_TIMEOUT
    webhooks: ServiceCall  # the same for the webhooks service
    dispatch: Callable[[str, dict[str, Any]], None]
    # One statement on a connection of the row reader (dependencies.RowReader): read(lambda conn: ...)
    read: Callable[[Callable[[Connection], Any]], Any]

    def caller(self, request: Request) -> Caller:
        """The authenticated user of ``request`` (401 otherwise); the session is closed before the route goes on."""
        with self.db() as session:
            return self.caller_in(session, request)

    def caller_in(self, session: Session | Connection, request: Request) -> Caller:
        """``caller`` within the route's own session (a route that reads one row needs no second session)."""
        return auth.current_caller(session, request.headers.get("Authorization"), self.config.token_key)

    def byte_budget(self, user_id: int) -> quotas.ByteBudget:
        """The user's stored-bytes budget for an upload (storage counts what the user holds)."""
        def stored_bytes(owner: int) -> int:
            with unavailable("storage_unavailable", "Storage is not answering; try again later."):
                return self.storage.stored_bytes(owner)

        return quotas.budget_for(stored_bytes, user_id, self.quota)
