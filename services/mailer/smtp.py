"""SMTP delivery of one stored message, with every outcome classified for the delivery log.

The session is split at the one point that matters for exactly-once: ``before_data`` runs after the server accepted
sender and recipient and before ``DATA``. Until then nothing can have been delivered, so any failure is safe to retry;
once DATA has begun, only an explicit SMTP reply is a definite answer (see ``OutcomeUnknown``).
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable

from services.mailer.settings import MailSettings

# A deliberately plain address check (dot-atom local part, hostname domain, ASCII only): anything else is refused up
# front instead of being retried against a server that will refuse it, and no header can be smuggled in.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")


class DeliveryError(Exception):
    """Base: the mail was not (known to be) delivered; ``str()`` is a reason fit for the log and the admin API."""


class TemporaryFailure(DeliveryError):
    """Not delivered; worth retrying (server down, 4xx, timeout before DATA, configuration being fixed)."""


class PermanentFailure(DeliveryError):
    """Not delivered and never will be as is (5xx: unknown mailbox, rejected message)."""


class OutcomeUnknown(DeliveryError):
    """The connection failed after DATA began without a reply: the server may or may not have accepted the mail."""


class Aborted(DeliveryError):
    """``before_data`` declined (another sender owns the delivery now); nothing was sent."""


def invalid_recipient(address: str) -> str | None:
    """Why ``address`` cannot receive mail, or None when it looks deliverable."""
    if not isinstance(address, str) or not address:
        return "no recipient address"
    if len(address) > 254 or not _ADDRESS_RE.fullmatch(address):
        return f"{address[:254]!r} is not a valid email address"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return f"recipient refused: {code} {_decode(text)}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "the mail server did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "the mail server refused the connection (is it running?)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _by_code(code: int, reason: str) -> DeliveryError:
    return PermanentFailure(reason) if 500 <= code < 600 else TemporaryFailure(reason)


def _check_final_reply(code: int, text: bytes | str) -> None:
    """The server's reply after the message body: 250 is delivery; anything else says what happened.

    A definite 4xx/5xx means the server did NOT take the message (RFC 5321 4.2.5), so it is safe to retry a 4xx and
    a 5xx is final: neither is "uncertain". A reply that is no SMTP answer at all leaves the outcome unknown.
    """
    if code == 250:
        return
    reason = f"message refused after DATA: {code} {_decode(text)}".rstrip()
    if 400 <= code < 600:
        raise _by_code(code, reason)
    raise OutcomeUnknown(f"unexpected reply after DATA ({code} {_decode(text)}); the mail may have been delivered, "
                         "so it is not sent again")


class SmtpTransport:
    """Sends one message per SMTP session according to MailSettings (security mode, credentials, timeout)."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def _connect(self, timeout: float | None = None) -> smtplib.SMTP:
        s = self.settings
        timeout = s.smtp_timeout if timeout is None else timeout
        # The local hostname without a DNS lookup: socket.getfqdn() can stall for seconds on a resolver timeout.
        local = socket.gethostname() or "localhost"
        if s.smtp_security == "tls":
            return smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, local_hostname=local, timeout=timeout,
                                    context=ssl.create_default_context())
        smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=local, timeout=timeout)
        if s.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        return smtp

    def probe(self, timeout: float) -> str | None:
        """Open a session as a delivery would (TLS, AUTH), say EHLO and NOOP, quit; None if all went well, else why.

        Sends no mail: a server that refuses only messages (after DATA) shows in the delivery outcomes instead.
        """
        try:
            smtp = self._connect(timeout)
        except (OSError, smtplib.SMTPException) as exc:
            return _reason(exc)
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.settings.smtp_user:
                smtp.login(self.settings.smtp_user, self.settings.smtp_password or "")
            code, text = smtp.noop()
            if code != 250:
                return f"NOOP answered {code} {_decode(text)}".rstrip()
        except (OSError, smtplib.SMTPException) as exc:
            return _reason(exc)
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return None

    def send(self, *, sender: str, recipient: str, message: str, before_data: Callable[[], bool]) -> None:
        """Deliver ``message`` or raise a DeliveryError subclass saying what is known about the outcome."""
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:  # includes a 4xx/5xx greeting: a busy or closed server
            raise TemporaryFailure(_reason(exc)) from exc
        try:
            self._envelope(smtp, sender, recipient)
            if not before_data():
                raise Aborted("another mailer instance took over this delivery")
            try:
                # data() raises only when DATA itself is refused; the final reply to the message is *returned*
                # (docs/architecture.md fact 9), so a 451/554 refusal would otherwise pass for success.
                code, text = smtp.data(message.encode("ascii"))
            except smtplib.SMTPResponseException as exc:  # DATA refused (not 354): nothing was transmitted
                raise _by_code(exc.smtp_code, f"DATA refused: {_reason(exc)}") from exc
            except (OSError, smtplib.SMTPException) as exc:
                raise OutcomeUnknown(f"connection lost during DATA ({_reason(exc)}); the mail may have been "
                                     "delivered, so it is not sent again") from exc
            _check_final_reply(code, text)
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _envelope(self, smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
        s = self.settings
        try:
            smtp.ehlo_or_helo_if_needed()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
            # mail() and rcpt() return the reply instead of raising: check each one. One recipient per session,
            # so a refused RCPT refuses the whole mail (there is no partial delivery to account for).
            code, text = smtp.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, text, sender)
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, text)})
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:
            # Wrong credentials or a server without AUTH/STARTTLS is a configuration fault an operator can fix:
            # keep retrying within the window rather than failing every mail for good.
            raise TemporaryFailure(f"mail server configuration: {_reason(exc)}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise _by_code(code, _reason(exc)) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise _by_code(exc.smtp_code, f"sender refused: {_reason(exc)}") from exc
        except smtplib.SMTPResponseException as exc:  # EHLO/HELO refused
            raise _by_code(exc.smtp_code, _reason(exc)) from exc
        except (OSError, smtplib.SMTPException) as exc:  # disconnects, timeouts: nothing was delivered yet
            raise TemporaryFailure(_reason(exc)) from exc
