"""The mailer's settings, read from the environment (defaults: the run command's mail sink on 127.0.0.1:8025)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email.utils import parseaddr

SECURITY_MODES = ("none", "starttls", "tls")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value in (None, "") else value


@dataclass(frozen=True)
class MailSettings:
    smtp_host: str
    smtp_port: int
    smtp_security: str  # none | starttls | tls
    smtp_user: str | None
    smtp_password: str | None = field(repr=False)  # never logged: repr hides it
    mail_from: str
    reply_to: str | None
    smtp_timeout: float  # seconds, per SMTP operation
    retry_seconds: float  # keep retrying a temporarily failing mail this long after it was first recorded
    retry_base: float  # first retry delay; doubles per attempt

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery is presumed alive: longer than a normal SMTP session takes.

        A crashed sender's claim runs out after this; only latency depends on it, not correctness (claims are fenced).
        """
        return 2 * self.smtp_timeout + 5

    @property
    def sender_address(self) -> str:
        """The bare address of MAIL_FROM, used as the SMTP envelope sender."""
        return parseaddr(self.mail_from)[1]

    @property
    def domain(self) -> str:
        return self.sender_address.rsplit("@", 1)[-1] or "localhost"


def load_mail_settings() -> MailSettings:
    security = _env("SMTP_SECURITY", "none").lower()
    if security not in SECURITY_MODES:
        raise ValueError(f"SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    mail_from = _env("MAIL_FROM", "Event Platform <platform@localhost>")
    if "@" not in parseaddr(mail_from)[1]:
        raise ValueError(f"MAIL_FROM is not an email address: {mail_from!r}")
    return MailSettings(
        smtp_host=_env("SMTP_HOST", "127.0.0.1"),
        smtp_port=int(_env("SMTP_PORT", "8025")),
        smtp_security=security,
        smtp_user=os.environ.get("SMTP_USER") or None,
        smtp_password=os.environ.get("SMTP_PASSWORD") or None,
        mail_from=mail_from,
        reply_to=os.environ.get("MAIL_REPLY_TO") or None,
        smtp_timeout=float(_env("SMTP_TIMEOUT", "30")),
        retry_seconds=float(_env("MAIL_RETRY_SECONDS", "3600")),
        retry_base=float(_env("MAIL_RETRY_BASE", "10")),
    )
