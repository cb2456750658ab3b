"""The whole system on one machine: migrations, a local mail sink and the five services, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from shared.config import ensure_local_secret, load_settings
from shared.db import upgrade_to_head
from tools.stack import Stack, default_env

MAIL_PORT = os.environ.get("SMTP_PORT", "8025")


def main() -> int:
    settings = load_settings()
    var_dir = settings.var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = default_env(var_dir)
    # Services refuse the public default secret: use SECRET_KEY if set, else a random one kept in var/secret_key.
    env.update(ensure_local_secret(var_dir))
    os.environ.update(env)
    upgrade_to_head(load_settings().database_url)

    mail_dir = var_dir / "mail"
    mail_dir.mkdir(exist_ok=True)
    # A local SMTP sink: every message lands as a file in var/mail (a Maildir), readable with any text viewer.
    mail_sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{MAIL_PORT}",
                                  "-c", "aiosmtpd.handlers.Mailbox", str(mail_dir)])
    stack = Stack(env=env)
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        stack.start_all()
        stack.wait_healthy(timeout=90)
        print(f"\nready: API {env['GATEWAY_URL']}  (health: {env['GATEWAY_URL']}/health)\n"
              f"       storage {env['STORAGE_URL']}, database {env['DATABASE_URL']}\n"
              f"       mail sink smtp://127.0.0.1:{MAIL_PORT}, messages in {mail_dir}\n"
              f"Ctrl-C stops everything.\n", flush=True)
        while not stopping:
            signal.pause()
    finally:
        print("stopping...", flush=True)
        stack.stop_all()
        mail_sink.terminate()
        mail_sink.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
