"""The retry timer's work: deliver every due row, a few at once, and record each outcome on its claim."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import eventlet
from sqlalchemy.orm import Session, sessionmaker

from services.webhooks import outbox
from services.webhooks.sender import Outcome, post
from services.webhooks.settings import WebhookSettings
from shared import metrics
from shared.address_guard import AddressGuard
from shared.models.base import utcnow
from shared.webhook_signature import headers

log = logging.getLogger(__name__)
BATCH = 100  # due rows taken per tick
# An attempt that leaves the row pending was a failure that will be retried.
_OUTCOMES = {outbox.DELIVERED: "delivered", outbox.FAILED: "failed"}


@dataclass(frozen=True)
class Courier:
    db: sessionmaker[Session]
    settings: WebhookSettings
    guard: AddressGuard

    def run_due(self) -> int:
        """Attempt every due delivery (``settings.concurrency`` at once); how many were attempted."""
        with self.db() as session:
            ids = outbox.due(session, now=utcnow(), limit=BATCH)
        pool = eventlet.GreenPool(self.settings.concurrency)
        for delivery_id in ids:
            pool.spawn_n(self._guarded, delivery_id)
        pool.waitall()
        return len(ids)

    def _guarded(self, delivery_id: int) -> None:
        try:
            state = self.deliver(delivery_id)
            if state is not None:
                metrics.WEBHOOK_DELIVERIES.labels(_OUTCOMES.get(state, "retried")).inc()
        except Exception:  # one row's trouble (the database) must not stop the others; it is due again later
            log.exception("webhook delivery %s could not be attempted", delivery_id)

    def deliver(self, delivery_id: int) -> str | None:
        """One attempt at one delivery; its new state (None: another sender had it)."""
        s = self.settings
        with self.db() as session:
            claim = outbox.claim(session, delivery_id, now=utcnow(), lease=s.lease_seconds)
        if claim is None:
            return None
        if claim.url is None or claim.secret is None:
            with self.db() as session:
                outbox.mark_failed(session, claim, "the endpoint was deleted or deactivated", now=utcnow())
            return outbox.FAILED
        body = claim.body.encode()
        # The timestamp is this attempt's (receivers refuse old ones); the id is the delivery's, on every attempt.
        signed = headers(claim.secret, claim.message_id, int(time.time()), body)
        outcome: Outcome = post(self.guard, claim.url, body, signed, timeout=s.timeout,
                                attempt_seconds=s.attempt_seconds, max_response_bytes=s.max_response_bytes)
        with self.db() as session:
            if outcome.delivered:
                return outbox.DELIVERED if outbox.mark_delivered(session, claim, outcome.status or 0,
                                                                 now=utcnow()) else None
            log.info("webhook %s attempt %d failed: %s", claim.message_id, claim.token, outcome.error)
            return outbox.retry_later(session, claim, outcome.status, outcome.error or "failed", now=utcnow(),
                                      settings=s)
