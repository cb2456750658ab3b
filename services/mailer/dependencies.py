"""nameko DependencyProviders of the mailer: its settings and the SMTP transport built from them."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from services.mailer.settings import MailSettings, load_mail_settings
from services.mailer.smtp import SmtpTransport


class MailConfig(DependencyProvider):
    """MailSettings read from the environment once at container start (a bad SMTP_SECURITY fails the start)."""

    def setup(self) -> None:
        self.settings = load_mail_settings()

    def get_dependency(self, worker_ctx) -> MailSettings:  # noqa: ANN001
        return self.settings


class Smtp(DependencyProvider):
    """The SMTP transport; one short session per mail, so nothing to keep open between workers."""

    def setup(self) -> None:
        self.transport = SmtpTransport(load_mail_settings())

    def get_dependency(self, worker_ctx) -> SmtpTransport:  # noqa: ANN001
        return self.transport
