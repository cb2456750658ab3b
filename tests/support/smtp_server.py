"""A real SMTP server for the tests: aiosmtpd in a subprocess on 127.0.0.1, storing what it accepts in a Maildir.

It runs as a subprocess because aiosmtpd is asyncio and the test process is eventlet-patched; it also lets a test
stop the server ("down") and start it again on the same port. The test steers it through a mode file:

- ``accept``      store the message, answer 250
- ``451`` / ``550`` refuse every recipient (temporary / permanent)
- ``mail_451`` / ``mail_553`` refuse the sender at MAIL FROM (temporary / permanent)
- ``data_451`` / ``data_554`` take the message body, then refuse it with the final reply after DATA (nothing stored)
- ``noop_421``    answer 421 (service not available) to NOOP, as a server that is shutting down does
- ``stall_rcpt``  hold RCPT TO until the mode changes (nothing stored: a sender killed now delivered nothing)
- ``stall_data``  store the message at end of DATA, then hold the 250 until the mode changes (like a server that
                  committed the mail but whose reply never arrived)

Every step is appended to ``events.log`` so tests can wait for "the sender is now stuck in DATA".

Run standalone: ``python -m tests.support.smtp_server --port 2525 --root /tmp/smtp``.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import os
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

MODES = ("accept", "451", "550", "mail_451", "mail_553", "data_451", "data_554", "noop_421", "stall_rcpt",
         "stall_data")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpServer:
    """Controls the server subprocess from a test. ``port`` is picked once and kept across stop/start."""

    def __init__(self, root: Path, port: int | None = None, *, security: str = "none", cert: Path | None = None,
                 key: Path | None = None, login: tuple[str, str] | None = None) -> None:
        """``security``: none | starttls | tls (implicit TLS) with ``cert``/``key``; ``login``: AUTH required."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.security = security
        self.options = ["--security", security]
        if cert is not None and key is not None:
            self.options += ["--cert", str(cert), "--key", str(key)]
        if login is not None:
            self.options += ["--user", login[0], "--password", login[1]]
        self.proc: subprocess.Popen | None = None
        self.set_mode("accept")

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self, timeout: float = 15) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the subprocess
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.smtp_server", "--port", str(self.port),
                                      "--root", str(self.root), *self.options], cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SMTP server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                    if self.security == "tls":  # readiness only: the tests check certificates themselves
                        probe = ssl.create_default_context()
                        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
                        conn = probe.wrap_socket(conn)
                    if conn.recv(64).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SMTP server not answering on port {self.port} after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Down: the port refuses connections until ``start`` again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- steering --------------------------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        tmp = self.root / "mode.tmp"
        tmp.write_text(mode)
        os.replace(tmp, self.root / "mode")  # atomic: the server never reads half a mode

    def log_lines(self) -> list[str]:
        path = self.root / "events.log"
        return path.read_text().splitlines() if path.exists() else []

    def wait_log(self, needle: str, timeout: float = 30, since: int = 0) -> str:
        """The first events.log line (from line ``since``) containing ``needle``, polled with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines()[since:]:
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in the SMTP log after {timeout} s: {self.log_lines()[-20:]}")
            time.sleep(0.05)

    # --- what was received -----------------------------------------------------------------------------------------

    def messages(self, containing: str | None = None) -> list[EmailMessage]:
        """Stored messages, oldest first; with ``containing``: only those whose Message-ID contains it."""
        box = self.root / "maildir" / "new"
        files = sorted(box.iterdir(), key=lambda p: p.stat().st_mtime_ns) if box.is_dir() else []
        found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]
        return [m for m in found if containing is None or containing in (m["Message-ID"] or "")]

    def wait_messages(self, containing: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(containing)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} message(s) for {containing!r} after {timeout} s, wanted {count}")
            time.sleep(0.05)


# --- the server side (runs in the subprocess, plain asyncio) -------------------------------------------------------

# Modes in which a command is refused: (command, mode) -> the server's reply.
REFUSALS = {
    ("MAIL", "mail_451"): "451 4.3.2 Sender temporarily rejected, try again later",
    ("MAIL", "mail_553"): "553 5.7.1 Sender address rejected: not allowed to relay",
    ("RCPT", "451"): "451 4.3.0 Mailbox temporarily unavailable, try again later",
    ("RCPT", "550"): "550 5.1.1 No such mailbox here",
    ("DATA", "data_451"): "451 4.7.1 Message deferred: please try again later",
    ("DATA", "data_554"): "554 5.7.1 Message rejected as spam",
}


class _Handler:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.box = mailbox.Maildir(root / "maildir", create=True)

    def mode(self) -> str:
        try:
            return (self.root / "mode").read_text().strip() or "accept"
        except FileNotFoundError:
            return "accept"

    def log(self, line: str) -> None:
        with open(self.root / "events.log", "a") as f:
            f.write(f"{time.time():.3f} {line}\n")

    async def handle_NOOP(self, server, session, envelope, arg):  # noqa: ANN001, ANN201, N802
        mode = self.mode()
        self.log(f"NOOP mode={mode}")
        return "421 4.3.2 Service shutting down" if mode == "noop_421" else "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201, N802
        mode = self.mode()
        self.log(f"MAIL {address} mode={mode}")
        if ("MAIL", mode) in REFUSALS:
            return REFUSALS["MAIL", mode]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201, N802
        import asyncio

        mode = self.mode()
        self.log(f"RCPT {address} mode={mode}")
        if ("RCPT", mode) in REFUSALS:
            return REFUSALS["RCPT", mode]
        if mode == "stall_rcpt":
            self.log(f"RCPT stalled {address}")
            while self.mode() == "stall_rcpt":
                await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        import asyncio

        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        msg_id = str(message["Message-ID"] or "").strip()  # (a folded header keeps its leading space)
        mode = self.mode()
        if ("DATA", mode) in REFUSALS:
            self.log(f"DATA refused {mode[5:]} {msg_id}")
            return REFUSALS["DATA", mode]
        self.box.add(envelope.original_content)  # Maildir: written to tmp/, renamed into new/ (atomic)
        self.log(f"DATA stored {msg_id}")
        if self.mode() == "stall_data":
            self.log(f"DATA stalled {msg_id}")
            while self.mode() == "stall_data":
                await asyncio.sleep(0.05)
        return "250 Message accepted for delivery"


def main() -> int:
    import signal
    import threading

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--security", choices=("none", "starttls", "tls"), default="none")
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    options: dict = {}
    if args.security != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        options["ssl_context" if args.security == "tls" else "tls_context"] = context
        options["require_starttls"] = args.security == "starttls"
    if args.user:
        handler_root = args.root

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            ok = (auth_data.login.decode(), auth_data.password.decode()) == (args.user, args.password)
            with open(handler_root / "events.log", "a") as f:
                f.write(f"{time.time():.3f} AUTH {mechanism} {'ok' if ok else 'refused'}\n")
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

        # aiosmtpd only counts STARTTLS as TLS; with implicit TLS the whole connection is encrypted anyway.
        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=args.security == "starttls")
    controller = Controller(_Handler(args.root), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
