"""The admin API: the mailer's delivery log and storage's backend records, both read through their owner's RPC.

Only admins get here: ``service.py`` checks ``rules.require_admin`` before it parses anything (403 before 400).

Storage owns the backend records and validates them; here only the HTTP shape is checked and storage's refusals
become HTTP errors (``errors.BACKEND_REFUSALS``). Tokens and secrets pass through to storage but are never logged
here and never come back: storage returns ``token_set``/``secrets_set`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug import Request, Response

from services.api_gateway import pagination
from services.api_gateway.context import Gateway
from services.api_gateway.errors import BACKEND_REFUSALS, storage_errors, unavailable
from shared.http import ApiError, json_response

# what an admin route is, in "Only admins may ...": the 403 of the others
T = TypeVar("T")
MAIL_LOG = "see the mail log"
BACKENDS = "manage storage backends"


def mail_log(gw: Gateway, request: Request) -> Response:
    """The mailer's recent deliveries and their states (no message bodies or links), newest first, one page: the
    mailer pages its log (keyset on the delivery id)."""
    page = pagination.page_query(gw, request, "mails", 1, (int,))
    with unavailable("mailer_unavailable"):
        found = gw.mailer("recent_deliveries", page.limit + 1, page.after[0] if page.after else None)
    return pagination.page_response(gw, request, "mails", page, found, lambda d: (d["id"],), lambda d: d)


def _backends(step: Callable[[], T]) -> T:
    """One call of the storage client (``lambda: gw.storage.list_backends()``): refusals 400/404/409, silence 503."""
    with storage_errors(*BACKEND_REFUSALS):
        return step()


def list_backends(gw: Gateway, request: Request) -> Response:
    """The backend records in creation order, one page (storage pages them: keyset on the record)."""
    page = pagination.page_query(gw, request, "backends", 1, (str,))
    found = _backends(lambda: gw.storage.list_backends(page.limit + 1, page.after[0] if page.after else None))
    return pagination.page_response(gw, request, "backends", page, found["data"], lambda r: (r["storage_backend_id"],),
                                    lambda r: r, extra={"default": found["default"]})


def create_backend(gw: Gateway, body: Any) -> Response:
    record = _backends(lambda: gw.storage.create_backend(body))
    url = f"/v1/admin/storage-backends/{record['storage_backend_id']}"
    return json_response(record, status=201, headers={"Location": url})


def get_backend(gw: Gateway, identifier: str) -> Response:
    record = _backends(lambda: gw.storage.describe_backend(identifier))
    if record is None:
        raise ApiError(404, "storage_backend_not_found", f"There is no storage backend {identifier!r}.")
    return json_response(record)


def update_backend(gw: Gateway, identifier: str, body: Any) -> Response:
    """Change keep_days, description, active, token or config keys (merged: secrets not sent are kept)."""
    return json_response(_backends(lambda: gw.storage.update_backend(identifier, body)))


def deactivate_backend(gw: Gateway, identifier: str) -> Response:
    """Deactivate (records are never removed: objects stored there stay readable and keep expiring)."""
    return json_response(_backends(lambda: gw.storage.deactivate_backend(identifier)))
