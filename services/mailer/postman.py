"""What the mailer does, without nameko: record a notification, deliver due mails, announce the outcomes.

The service shell (service.py) calls ``notify`` from its event handlers and ``run_due`` / ``announce_missed`` from
timers. Retrying never holds a worker: a temporary failure only schedules the row (``next_attempt_at``), and a timer
on any mailer instance picks it up when due, so a restart loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.mailer import outbox, templates
from services.mailer.settings import MailSettings
from services.mailer.smtp import (
    Aborted,
    OutcomeUnknown,
    PermanentFailure,
    SmtpTransport,
    TemporaryFailure,
    invalid_recipient,
)
from shared import contracts, metrics
from shared.jobs.lifecycle import ANNOUNCE_GRACE
from shared.models.base import utcnow
from shared.models.events import Event
from shared.models.mailer import MailDelivery

log = logging.getLogger(__name__)
# An attempt's resulting state -> the outcome counted in shared.metrics.MAILS (pending again: "retried").
MAIL_OUTCOMES = {outbox.SENT: "sent", outbox.FAILED: "failed", outbox.UNCERTAIN: "uncertain"}

DUE_BATCH = 50


@dataclass(kw_only=True, eq=False)
class Postman:
    db: sessionmaker[Session]
    transport: SmtpTransport
    settings: MailSettings
    gateway_url: str
    publish: contracts.Publish
    clock: Callable[[], datetime] = utcnow

    # --- a finished job arrives ------------------------------------------------------------------------------------

    def notify(self, kind: str, payload: dict[str, Any]) -> None:
        """Record the mail for ``kind`` (export_completed...) once, then try to send it right away.

        Raises marshmallow.ValidationError for a payload that breaks the contract.
        """
        data = contracts.load_payload(kind, payload)
        key = outbox.dedupe_key(data["task_id"], kind)
        with self.db() as session:
            if outbox.is_recorded(session, key):
                log.info("mail %s already recorded: redelivered event, nothing to send", key)
                return
            event_name = self._event_name(session, data["event_id"]) if kind.startswith("export") else None
            event_url = self._event_url(session, data["id"]) if kind == contracts.IMPORT_COMPLETED else None
        recipient = data["requested_by"]["email"]
        mail = templates.render(kind, data, event_name=event_name, gateway_url=self.gateway_url, event_url=event_url)
        msg_id = templates.message_id(kind, data["task_id"], self.settings.domain)
        refused = invalid_recipient(recipient)
        message = "" if refused else templates.build_message(
            mail, sender=self.settings.mail_from, recipient=recipient, reply_to=self.settings.reply_to,
            msg_id=msg_id)
        notification = outbox.Notification(
            task_id=data["task_id"], kind=kind, event_id=data["event_id"], requester_id=data["requested_by"]["id"],
            recipient=recipient, subject=mail.subject, message=message, message_id=msg_id)
        with self.db() as session:
            delivery_id = outbox.record(session, notification, now=self.clock(), refused=refused)
        if delivery_id is None:
            log.info("mail %s recorded concurrently by another worker", key)
        elif refused:
            log.warning("mail %s refused: %s", key, refused)
            self._announce(delivery_id)
        else:
            self.deliver(delivery_id)

    @staticmethod
    def _event_name(session: Session, event_id: int | None) -> str | None:
        event = session.get(Event, event_id) if event_id is not None else None
        return event.name if event is not None else None

    def _event_url(self, session: Session, event_id: int) -> str | None:
        """The imported event in a browser (EVENT_URL_TEMPLATE with its id and identifier), or None."""
        if not self.settings.event_url_template:
            return None
        identifier = session.scalar(select(Event.identifier).where(Event.id == event_id))
        return templates.event_link(self.settings.event_url_template, event_id, identifier)

    # --- one SMTP attempt --------------------------------------------------------------------------------------------

    def deliver(self, delivery_id: int) -> str | None:
        """Claim the delivery and make one attempt; returns the resulting state, or None if it was not ours."""
        lease = self.settings.lease_seconds
        with self.db() as session:
            claim = outbox.claim(session, delivery_id, now=self.clock(), lease=lease)
        if claim is None:
            return None

        def before_data() -> bool:
            with self.db() as session:
                return outbox.begin_data(session, claim, now=self.clock(), lease=lease)

        try:
            self.transport.send(sender=self.settings.sender_address, recipient=claim.recipient,
                                message=claim.message, before_data=before_data)
        except Aborted:
            log.info("mail %s taken over by another sender before DATA", delivery_id)
            return None
        except TemporaryFailure as exc:
            with self.db() as session:
                state = outbox.retry_later(session, claim, str(exc), now=self.clock(),
                                           window=self.settings.retry_seconds, base=self.settings.retry_base)
            log.warning("mail %s attempt %d failed (%s): %s", delivery_id, claim.token, state, exc)
        except PermanentFailure as exc:
            with self.db() as session:
                state = outbox.FAILED if outbox.mark_failed(session, claim, str(exc), now=self.clock()) else None
            log.warning("mail %s refused by the mail server: %s", delivery_id, exc)
        except OutcomeUnknown as exc:
            with self.db() as session:
                ok = outbox.mark_uncertain(session, claim, str(exc), now=self.clock())
                state = outbox.UNCERTAIN if ok else None
            log.error("mail %s: %s", delivery_id, exc)
        else:
            with self.db() as session:
                state = outbox.SENT if outbox.mark_sent(session, claim, now=self.clock()) else None
            log.info("mail %s sent to its recipient", delivery_id)
        if state is not None:
            metrics.MAILS.labels(MAIL_OUTCOMES.get(state, "retried")).inc()
        if state in outbox.TERMINAL:
            self._announce(delivery_id)
        return state

    # --- timers ------------------------------------------------------------------------------------------------------

    def run_due(self) -> int:
        """Retry due deliveries, recover claims of vanished senders; returns how many rows were handled."""
        now = self.clock()
        with self.db() as session:
            rows = outbox.due(session, now=now, limit=DUE_BATCH)
        for delivery_id, state in rows:
            if state == outbox.TRANSMITTING:
                with self.db() as session:
                    expired = outbox.expire_transmitting(session, delivery_id, now=self.clock())
                if expired:
                    log.error("mail %s: its sender stopped during DATA; recorded as uncertain, not resent",
                              delivery_id)
                    self._announce(delivery_id)
            else:
                self.deliver(delivery_id)
        return len(rows)

    def announce_missed(self) -> int:
        """Publish mail_sent/mail_failed for terminal rows whose sender died before publishing (an outbox sweep)."""
        now = self.clock()
        before = now - ANNOUNCE_GRACE
        with self.db() as session:
            ids = outbox.unannounced(session, before=before, limit=DUE_BATCH)
        done = 0
        for delivery_id in ids:
            with self.db() as session:
                mine = outbox.claim_announcement(session, delivery_id, now=now, before=before)
            if mine and self._announce(delivery_id):
                done += 1
        return done

    # --- mail_sent / mail_failed ---------------------------------------------------------------------------------

    def _announce(self, delivery_id: int) -> bool:
        """Publish the outcome, then mark it published: at least once (the sweep repeats a publish cut short)."""
        with self.db() as session:
            row = session.get(MailDelivery, delivery_id)
            event_type, payload = mail_event(row)
        try:
            self.publish(event_type, payload)
            with self.db() as session:
                outbox.mark_announced(session, delivery_id, now=self.clock())
        except Exception:  # the mail itself is settled; the sweep publishes later
            log.exception("could not announce mail %s; the outbox sweep will retry", delivery_id)
            return False
        return True


def mail_event(row: MailDelivery) -> tuple[str, dict[str, Any]]:
    """The mail_sent or mail_failed payload for a terminal delivery row."""
    ids = {"task_id": row.task_id, "event_id": row.event_id,
           "requested_by": {"id": row.requester_id or 0, "email": row.recipient}}
    if row.state == outbox.SENT:
        return contracts.MAIL_SENT, contracts.make_payload(contracts.MAIL_SENT, **ids, kind=row.kind,
                                                           recipient=row.recipient,
                                                           subject=row.subject, message_id=row.message_id or "")
    reason = row.last_error or row.state
    if row.state == outbox.UNCERTAIN:
        reason = f"delivery uncertain: {reason}"
    return contracts.MAIL_FAILED, contracts.make_payload(contracts.MAIL_FAILED, **ids, kind=row.kind,
                                                         recipient=row.recipient,
                                                         reason=reason, attempts=row.attempts)
