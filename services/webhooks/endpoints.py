"""Registered endpoints and their delivery log as the gateway's RPCs see them (the gateway authorizes; this checks
the target URL and owns the rows). Lists are newest first by ``(created_at, id)``, keyset-paginated: ``after`` is the
last row's ``[created_at, id]`` of the previous page, ``next`` the one to pass for the next page (None: last page)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from services.webhooks import outbox
from shared.address_guard import AddressGuard, UrlRefused
from shared.contracts import utc_iso
from shared.models.base import utcnow
from shared.models.webhooks import WebhookDelivery, WebhookEndpoint
from shared.webhook_signature import new_secret, secret_key

RESOLVE_TIMEOUT = 5.0  # seconds for the DNS lookup of a new endpoint's host


class InvalidWebhookUrl(Exception):
    """The URL is not http(s), carries credentials, does not resolve, or points at a non-public address."""


class InvalidWebhookSecret(Exception):
    """A chosen secret that is not ``whsec_`` + base64 of 24 to 64 bytes."""


def describe(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events), "event_id": endpoint.event_id,
            "description": endpoint.description, "active": endpoint.active, "created_at": _iso(endpoint.created_at),
            "created_by": endpoint.created_by}


def describe_delivery(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.message_id, "event_type": row.event_type,
        # "sending" is an attempt under way: for the API still pending (it may need another attempt)
        "state": outbox.PENDING if row.state == outbox.SENDING else row.state,
        "attempts": row.attempts, "last_status": row.last_status, "last_error": row.last_error,
        "next_retry_at": _iso(row.next_attempt_at) if row.state == outbox.PENDING else None,
        "delivered_at": _iso(row.delivered_at), "created_at": _iso(row.created_at),
    }


def check_url(guard: AddressGuard, url: str) -> str:
    try:
        guard.check(url, RESOLVE_TIMEOUT)
    except UrlRefused as exc:
        raise InvalidWebhookUrl(f"{url[:200]!r} cannot receive webhooks: {exc.message}") from None
    return url.strip()


def create(session: Session, guard: AddressGuard, spec: dict[str, Any], created_by: int) -> dict[str, Any]:
    """A new endpoint; the answer holds its ``secret``, the only time it is shown."""
    url = check_url(guard, spec["url"])
    secret = spec.get("secret") or new_secret()
    try:
        secret_key(secret)
    except ValueError as exc:
        raise InvalidWebhookSecret(str(exc)) from None
    endpoint = WebhookEndpoint(url=url, events=sorted(set(spec["events"])), event_id=spec.get("event_id"),
                               description=spec.get("description"), secret=secret, active=True,
                               created_by=created_by, created_at=utcnow())
    session.add(endpoint)
    session.commit()
    return {**describe(endpoint), "secret": secret}


def get(session: Session, endpoint_id: int) -> dict[str, Any] | None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    return None if endpoint is None or endpoint.deleted_at is not None else describe(endpoint)


def delete(session: Session, endpoint_id: int) -> bool:
    """Deactivate for good (the delivery log stays readable to admins in the database); False if there is none."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        return False
    endpoint.deleted_at, endpoint.active = utcnow(), False
    session.commit()
    return True


def _page(session: Session, query: Select, model: type, limit: int, after: list[Any] | None) -> tuple[list, Any]:
    if after:
        created, row_id = datetime.fromisoformat(after[0]), int(after[1])
        query = query.where(or_(model.created_at < created, and_(model.created_at == created, model.id < row_id)))
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ([rows[-1].created_at.isoformat(), rows[-1].id] if more and rows else None)


def list_endpoints(session: Session, owner: int | None, limit: int, after: list[Any] | None) -> dict[str, Any]:
    """Live endpoints, all of them (``owner`` None: an admin) or those ``owner`` created."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None))
    if owner is not None:
        query = query.where(WebhookEndpoint.created_by == owner)
    rows, nxt = _page(session, query, WebhookEndpoint, limit, after)
    return {"data": [describe(r) for r in rows], "next": nxt}


def list_deliveries(session: Session, endpoint_id: int, limit: int, after: list[Any] | None) -> dict[str, Any]:
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    rows, nxt = _page(session, query, WebhookDelivery, limit, after)
    return {"data": [describe_delivery(r) for r in rows], "next": nxt}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment.replace(tzinfo=UTC))

