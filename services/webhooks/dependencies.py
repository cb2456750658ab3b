"""nameko DependencyProviders of the webhooks service: its settings and the address guard built from them."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from services.webhooks.settings import WebhookSettings, load_webhook_settings
from shared.address_guard import AddressGuard
from shared.config import load_settings
from shared.db import make_engine, make_session_factory
from shared.models.webhooks import reseal_secrets
from shared.secretbox import current_box


class WebhookConfig(DependencyProvider):
    """WebhookSettings read from the environment once at container start (a bad value fails the start); the
    endpoints' secrets are resealed with the newest encryption key then."""

    def setup(self) -> None:
        self.settings = load_webhook_settings()
        current_box()  # an unusable SECRETS_ENCRYPTION_KEYS entry fails the start, not the first delivery
        engine = make_engine(load_settings().database_url, pool_size=1)
        try:
            with make_session_factory(engine)() as session:  # secrets under a key being rotated out
                reseal_secrets(session)
        finally:
            engine.dispose()

    def get_dependency(self, worker_ctx) -> WebhookSettings:  # noqa: ANN001
        return self.settings


class Guard(DependencyProvider):
    """The address guard of webhook targets: public addresses, plus ``WEBHOOK_ALLOW_HOSTS``."""

    def setup(self) -> None:
        self.guard = AddressGuard(load_webhook_settings().allow_hosts, what="webhook URL")

    def get_dependency(self, worker_ctx) -> AddressGuard:  # noqa: ANN001
        return self.guard
