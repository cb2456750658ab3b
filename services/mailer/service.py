"""Mailer: tells requesters their job is done (issue: mailer). For now it answers health checks only."""

from __future__ import annotations

from nameko.rpc import rpc


class MailerService:
    name = "mailer"

    @rpc
    def health(self) -> dict[str, str]:
        return {"service": self.name, "status": "ok"}
