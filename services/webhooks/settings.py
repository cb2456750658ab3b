"""The webhooks service's settings, read from the environment (README, Configuration; docs/webhooks.md)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.address_guard import parse_allow_list
from shared.config import env_or

DEFAULT_SCHEDULE = "5,30,120,600,1800,3600"  # seconds after attempts 1, 2, 3...; then every WEBHOOK_RETRY_EVERY


@dataclass(frozen=True)
class WebhookSettings:
    allow_hosts: tuple[str, ...]  # WEBHOOK_ALLOW_HOSTS: non-public targets allowed (MEDIA_ALLOW_HOSTS syntax)
    timeout: float  # WEBHOOK_TIMEOUT: each of connect and read
    schedule: tuple[float, ...]  # WEBHOOK_RETRY_SCHEDULE: the first retry delays
    retry_every: float  # WEBHOOK_RETRY_EVERY: the delay once the schedule is used up
    retry_window: float  # WEBHOOK_RETRY_WINDOW: no attempt later than this after the first one
    max_response_bytes: int = 64 * 1024  # WEBHOOK_MAX_RESPONSE_BYTES: read of a receiver's answer, at most
    concurrency: int = 4  # WEBHOOK_CONCURRENCY: requests in flight at once

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt may take (resolve, connect, send, read the answer): a hard deadline."""
        return 2 * self.timeout

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery is presumed in flight; a sender killed meanwhile is retried after it."""
        return self.attempt_seconds + 5


def _seconds_list(name: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated seconds, not {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"{name} must list positive seconds, not {text!r}")
    return values


def load_webhook_settings() -> WebhookSettings:
    allow_hosts = tuple(h for h in env_or("WEBHOOK_ALLOW_HOSTS", "").split(",") if h.strip())
    parse_allow_list(allow_hosts)  # a malformed entry stops the service at start-up
    settings = WebhookSettings(
        allow_hosts=allow_hosts,
        timeout=float(env_or("WEBHOOK_TIMEOUT", "10")),
        schedule=_seconds_list("WEBHOOK_RETRY_SCHEDULE", env_or("WEBHOOK_RETRY_SCHEDULE", DEFAULT_SCHEDULE)),
        retry_every=float(env_or("WEBHOOK_RETRY_EVERY", "7200")),
        retry_window=float(env_or("WEBHOOK_RETRY_WINDOW", "86400")),
        max_response_bytes=int(env_or("WEBHOOK_MAX_RESPONSE_BYTES", str(64 * 1024))),
        concurrency=max(1, int(env_or("WEBHOOK_CONCURRENCY", "4"))),
    )
    if settings.timeout <= 0 or settings.retry_every <= 0 or settings.retry_window < 0:
        raise ValueError("WEBHOOK_TIMEOUT and WEBHOOK_RETRY_EVERY must be positive, WEBHOOK_RETRY_WINDOW not negative")
    return settings
