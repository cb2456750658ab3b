"""nameko DependencyProviders of the webhooks service: its settings and the address guard built from them."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from services.webhooks.settings import WebhookSettings, load_webhook_settings
from shared.address_guard import AddressGuard


class WebhookConfig(DependencyProvider):
    """WebhookSettings read from the environment once at container start (a bad value fails the start)."""

    def setup(self) -> None:
        self.settings = load_webhook_settings()

    def get_dependency(self, worker_ctx) -> WebhookSettings:  # noqa: ANN001
        return self.settings


class Guard(DependencyProvider):
    """The address guard of webhook targets: public addresses, plus ``WEBHOOK_ALLOW_HOSTS``."""

    def setup(self) -> None:
        self.guard = AddressGuard(load_webhook_settings().allow_hosts, what="webhook URL")

    def get_dependency(self, worker_ctx) -> AddressGuard:  # noqa: ANN001
        return self.guard
