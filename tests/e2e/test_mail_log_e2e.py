"""The admin mail log is the mailer's answer (its ``recent_deliveries`` RPC): the gateway reads no mailer table.

While the mailer is down the log is ``503 mailer_unavailable``; once it runs, the log answers.
"""

from __future__ import annotations

import time

import requests

from tests.e2e.test_export_e2e import assert_error
from tests.support.e2e import PASSWORD, Client, stack_for


def _login(url: str, deadline: float) -> Client:
    while True:  # the gateway alone is started without a health wait: poll until it listens
        try:
            return Client.login(url, "admin@example.org", PASSWORD)
        except (requests.ConnectionError, KeyError, ValueError):
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)


def test_mail_log_comes_from_the_mailer(tmp_path):
    with stack_for(tmp_path, {"admin": True}, RPC_TIMEOUT="2") as run:
        stack = run.start(services=("api_gateway",))
        admin = _login(run.url, time.monotonic() + 60)
        assert_error(admin.get("/v1/admin/mails"), 503, "mailer_unavailable")
        stack.start("mailer")
        deadline = time.monotonic() + 60
        while (r := admin.get("/v1/admin/mails")).status_code != 200:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.json() == {"data": [], "next_cursor": None}
