"""The gateway's one table from other services' errors to HTTP answers.

Storage's refusals arrive as the ``StorageClient``'s exception types (``shared.storage_client``), a silent service as
our own ``RpcTimeout``. Each route says which refusals it expects (``storage_errors(*types)``); the table says how
each one answers. Anything a route does not expect stays a 500: it is a bug, not a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from amqp.exceptions import NotFound as BrokerNotFound
from nameko.exceptions import RemoteError, UnknownService

from shared.http import ApiError
from shared.rpc import RpcTimeout
from shared.storage_client import (
    BackendCheckFailed,
    BackendError,
    BackendExists,
    InvalidBackendConfig,
    ObjectGone,
    ObjectNotFound,
    StorageFault,
    UnknownBackend,
)


def export_gone(task_id: str, why: str | None = None) -> ApiError:
    """410 for an export whose archive is gone, saying why (expired or deleted) when storage knows."""
    message = f"The archive of export {task_id} is no longer available"
    message += f": {why}." if why else "."
    return ApiError(410, "export_gone", message + " Request a new export.")


def media_gone(why: str) -> ApiError:
    return ApiError(410, "media_gone", f"This file is no longer available ({why}).")


# storage's refusal -> the ApiError it answers as (given storage's message)
MAPPED_ERRORS: dict[type[StorageFault], Callable[[str], ApiError]] = {
    InvalidBackendConfig: lambda why: ApiError(400, "invalid_storage_backend", why),
    BackendCheckFailed: lambda why: ApiError(400, "storage_backend_check_failed", why),
    UnknownBackend: lambda why: ApiError(404, "storage_backend_not_found", why),
    BackendExists: lambda why: ApiError(409, "storage_backend_exists", why),
    BackendError: lambda why: ApiError(502, "storage_error", why),
    ObjectNotFound: lambda why: ApiError(404, "not_found", "No media exists at this address."),
}
# the refusals of the backend-record admin API
BACKEND_REFUSALS = (InvalidBackendConfig, BackendCheckFailed, UnknownBackend, BackendExists)


@contextmanager
def unavailable(code: str, message: str | None = None) -> Iterator[None]:
    """A service that does not answer in time (``RpcTimeout``), or never ran on this broker (nameko's
    ``UnknownService``: its RPC queue does not exist yet; the broker's ``NotFound``: not even the RPC exchange does,
    nothing with an RPC entrypoint has started on this vhost yet), is 503 ``code``."""
    try:
        yield
    except (RpcTimeout, UnknownService, BrokerNotFound) as exc:
        raise ApiError(503, code, message or str(exc)) from exc


@contextmanager
def storage_errors(*expected: type[StorageFault], gone: Callable[[str], ApiError] | None = None) -> Iterator[None]:
    """Storage's silence is 503; the ``expected`` refusals answer as ``MAPPED_ERRORS`` says, ``ObjectGone`` as
    ``gone`` (what is gone differs: a medium, an export's archive)."""
    try:
        with unavailable("storage_unavailable"):
            yield
    except ObjectGone as exc:
        if gone is None:
            raise
        raise gone(str(exc)) from None
    except expected as exc:
        raise MAPPED_ERRORS[type(exc)](str(exc)) from None


# the webhooks service's refusals (by exception name, as nameko's RemoteError carries them) -> the ApiError
WEBHOOK_REFUSALS: dict[str, Callable[[str], ApiError]] = {
    "InvalidWebhookUrl": lambda why: ApiError(400, "invalid_webhook_url", why),
    "InvalidWebhookSecret": lambda why: ApiError(400, "invalid_request", why),
}


@contextmanager
def webhook_errors() -> Iterator[None]:
    """The webhooks service's silence is 503; its refusals answer as ``WEBHOOK_REFUSALS`` says."""
    try:
        with unavailable("webhooks_unavailable", "The webhooks service is not answering; try again later."):
            yield
    except RemoteError as exc:
        refusal = WEBHOOK_REFUSALS.get(exc.exc_type)
        if refusal is None:
            raise
        raise refusal(str(exc.value)) from None
