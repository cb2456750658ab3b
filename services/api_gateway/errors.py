"""The gateway's one table from other services' errors to HTTP answers.

Storage refuses with nameko ``RemoteError``s named after its exception types, and a silent service is our own
``RpcTimeout``. Each route says which remote errors it expects (``storage_errors(*names)``); the table says how each
one answers. Anything a route does not expect stays a 500: it is a bug, not a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nameko.exceptions import RemoteError

from shared.http import ApiError
from shared.rpc import RpcTimeout


def export_gone(task_id: str, why: str | None = None) -> ApiError:
    """410 for an export whose archive is gone, saying why (expired or deleted) when storage knows."""
    message = f"The archive of export {task_id} is no longer available"
    message += f": {why}." if why else "."
    return ApiError(410, "export_gone", message + " Request a new export.")


# remote exception type -> the ApiError it answers as (given the remote message)
MAPPED_ERRORS: dict[str, Callable[[str], ApiError]] = {
    "InvalidBackendConfig": lambda why: ApiError(400, "invalid_storage_backend", why),
    "BackendCheckFailed": lambda why: ApiError(400, "storage_backend_check_failed", why),
    "UnknownBackend": lambda why: ApiError(404, "storage_backend_not_found", why),
    "BackendExists": lambda why: ApiError(409, "storage_backend_exists", why),
    "BackendError": lambda why: ApiError(502, "storage_error", why),
    "ObjectNotFound": lambda why: ApiError(404, "not_found", "No media exists at this address."),
}
def media_gone(why: str) -> ApiError:
    return ApiError(410, "media_gone", f"This file is no longer available ({why}).")


# the remote errors of the backend-record admin API
BACKEND_REFUSALS = ("InvalidBackendConfig", "BackendCheckFailed", "UnknownBackend", "BackendExists")


@contextmanager
def storage_errors(*expected: str, gone: Callable[[str], ApiError] | None = None) -> Iterator[None]:
    """Storage's silence is 503; the ``expected`` remote errors answer as ``MAPPED_ERRORS`` says, ``ObjectGone`` as
    ``gone`` (what is gone differs: a medium, an export's archive)."""
    try:
        yield
    except RpcTimeout as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from exc
    except RemoteError as exc:
        if exc.exc_type == "ObjectGone" and gone is not None:
            raise gone(str(exc.value)) from None
        if exc.exc_type in expected:
            raise MAPPED_ERRORS[exc.exc_type](str(exc.value)) from None
        raise
