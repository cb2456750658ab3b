"""When a failed delivery is tried again: the documented backoff, bounded by the retry window."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.webhooks.settings import WebhookSettings


def delay_after(attempts: int, settings: WebhookSettings) -> float:
    """Seconds to wait after failed attempt number ``attempts`` (1, 2, ...): the schedule, then every N seconds."""
    if attempts <= len(settings.schedule):
        return settings.schedule[max(attempts, 1) - 1]
    return settings.retry_every


def next_attempt(first_attempt: datetime, now: datetime, attempts: int, settings: WebhookSettings) -> datetime | None:
    """When to try again after ``attempts`` failed ones, or None when the window is over (then: ``failed``).

    The last attempt falls at the end of the window at the latest: a delay running past it is cut short.
    """
    deadline = first_attempt + timedelta(seconds=settings.retry_window)
    if now >= deadline:
        return None
    return min(now + timedelta(seconds=delay_after(attempts, settings)), deadline)
