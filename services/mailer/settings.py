"""The mailer's settings, read from the environment (defaults: the run command's mail sink on 127.0.0.1:8025)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from email.utils import parseaddr
from string import Formatter

from shared.config import env_or

SECURITY_MODES = ("none", "starttls", "tls")
# The default mail server is the run command's sink on 127.0.0.1 (tools/settings_inventory.py).
DEPLOYMENT_REQUIRED = ("SMTP_HOST",)


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
    # /health calls mail delivery degraded once this many delivery attempts failed since the last delivered mail.
    health_failures: int = 2
    # The import mail's link to the new event, e.g. "https://frontend.example/e/{identifier}"; None: no link.
    event_url_template: str | None = None

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


EVENT_URL_FIELDS = ("id", "identifier")


def check_event_url_template(template: str | None) -> str | None:
    """EVENT_URL_TEMPLATE must be an http(s) URL whose only placeholders are {id} and {identifier}."""
    if template is None:
        return None
    if not template.startswith(("https://", "http://")):
        raise ValueError(f"EVENT_URL_TEMPLATE must start with https:// or http://, not {template!r}")
    try:
        fields = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"EVENT_URL_TEMPLATE {template!r}: {exc}") from exc
    unknown = sorted(fields - set(EVENT_URL_FIELDS))
    if unknown:
        raise ValueError(f"EVENT_URL_TEMPLATE may use {{id}} and {{identifier}} only, not {{{unknown[0]}}}")
    return template


def load_mail_settings() -> MailSettings:
    security = env_or("SMTP_SECURITY", "none").lower()
    if security not in SECURITY_MODES:
        raise ValueError(f"SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    mail_from = env_or("MAIL_FROM", "Event Platform <platform@localhost>")
    if "@" not in parseaddr(mail_from)[1]:
        raise ValueError(f"MAIL_FROM is not an email address: {mail_from!r}")
    return MailSettings(
        smtp_host=env_or("SMTP_HOST", "127.0.0.1"),
        smtp_port=int(env_or("SMTP_PORT", "8025")),
        smtp_security=security,
        smtp_user=os.environ.get("SMTP_USER") or None,
        smtp_password=os.environ.get("SMTP_PASSWORD") or None,
        mail_from=mail_from,
        reply_to=os.environ.get("MAIL_REPLY_TO") or None,
        smtp_timeout=float(env_or("SMTP_TIMEOUT", "30")),
        retry_seconds=float(env_or("MAIL_RETRY_SECONDS", "3600")),
        retry_base=float(env_or("MAIL_RETRY_BASE", "10")),
        health_failures=max(1, int(env_or("MAIL_HEALTH_FAILURES", "2"))),
        event_url_template=check_event_url_template(os.environ.get("EVENT_URL_TEMPLATE") or None),
    )
