"""SMTP_SECURITY and credentials against a real aiosmtpd server with STARTTLS / implicit TLS and AUTH (no broker)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from services.mailer.smtp import OutcomeUnknown, PermanentFailure, SmtpTransport, TemporaryFailure
from tests.integration.test_mailer_delivery import settings
from tests.support.smtp_server import SmtpServer

LOGIN = ("mailer", "s3cret-Pa55")
MESSAGE = "Message-ID: <tls-{n}@example.org>\r\nSubject: hello\r\nFrom: platform@example.org\r\n\r\nhi\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1; trusted by the client only through SSL_CERT_FILE."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out",
                    str(d / "cert.pem")], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module", params=["starttls", "tls"])
def secure_smtp(request, tmp_path_factory, certificate):
    cert, key = certificate
    server = SmtpServer(tmp_path_factory.mktemp(request.param), security=request.param, cert=cert, key=key,
                        login=LOGIN)
    with server:
        yield server


def send(server: SmtpServer, n: int, **overrides) -> None:
    s = settings(server.port, **{"smtp_security": server.security, "smtp_user": LOGIN[0],
                                 "smtp_password": LOGIN[1], **overrides})
    SmtpTransport(s).send(sender="platform@example.org", recipient="orga@example.org",
                          message=MESSAGE.format(n=n), before_data=lambda: True)


def test_mail_goes_out_encrypted_and_authenticated(secure_smtp, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    send(secure_smtp, 1)
    assert len(secure_smtp.wait_messages("tls-1@")) == 1
    assert secure_smtp.wait_log("AUTH").endswith(" ok")


def test_wrong_credentials_are_a_retryable_configuration_fault_that_never_shows_the_password(
        secure_smtp, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with pytest.raises(TemporaryFailure, match="configuration") as failure:
        send(secure_smtp, 2, smtp_password="wrong-Pa55word")
    assert "wrong-Pa55word" not in str(failure.value) and LOGIN[1] not in str(failure.value)
    assert secure_smtp.messages("tls-2@") == []


def test_an_untrusted_certificate_is_refused(secure_smtp, monkeypatch, tmp_path):
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        send(secure_smtp, 3)
    assert secure_smtp.messages("tls-3@") == []


# --- every SMTP step's reply is checked (a plain server, no TLS) ---------------------------------------------------

@pytest.fixture(scope="module")
def plain_smtp(tmp_path_factory):
    with SmtpServer(tmp_path_factory.mktemp("plain")) as server:
        yield server


def send_plain(server: SmtpServer, tag: str) -> list[str]:
    """Send one message; returns the steps ``before_data`` saw (it runs once the envelope was accepted)."""
    seen: list[str] = []

    def before_data() -> bool:
        seen.append("before_data")
        return True

    SmtpTransport(settings(server.port)).send(sender="platform@example.org", recipient="orga@example.org",
                                              message=MESSAGE.format(n=tag), before_data=before_data)
    return seen


@pytest.mark.parametrize(("mode", "error", "reply"), [
    ("data_451", TemporaryFailure, "message refused after DATA: 451 4.7.1 Message deferred"),
    ("data_554", PermanentFailure, "message refused after DATA: 554 5.7.1 Message rejected as spam"),
    ("mail_451", TemporaryFailure, "sender refused: 451 4.3.2 Sender temporarily rejected"),
    ("mail_553", PermanentFailure, "sender refused: 553 5.7.1 Sender address rejected"),
    ("451", TemporaryFailure, "recipient refused: 451 4.3.0"),
    ("550", PermanentFailure, "recipient refused: 550 5.1.1 No such mailbox"),
])
def test_a_refusal_at_any_step_raises_with_the_servers_reply(plain_smtp, mode, error, reply):
    plain_smtp.set_mode(mode)
    try:
        with pytest.raises(error) as failure:
            send_plain(plain_smtp, mode)
    finally:
        plain_smtp.set_mode("accept")
    assert reply in str(failure.value)
    assert not isinstance(failure.value, OutcomeUnknown)
    assert plain_smtp.messages(f"tls-{mode}@") == []  # the server really did not keep it


def test_a_refusal_after_data_comes_after_the_envelope_was_accepted(plain_smtp):
    """The 554 arrives once DATA began (the 'transmitting' window), and is still a definite answer."""
    plain_smtp.set_mode("data_554")
    seen: list[str] = []
    try:
        with pytest.raises(PermanentFailure):
            SmtpTransport(settings(plain_smtp.port)).send(
                sender="platform@example.org", recipient="orga@example.org", message=MESSAGE.format(n="window"),
                before_data=lambda: seen.append("before_data") or True)
    finally:
        plain_smtp.set_mode("accept")
    assert seen == ["before_data"]
    assert plain_smtp.wait_log("DATA refused 554 <tls-window@")


def test_an_accepted_message_still_goes_through(plain_smtp):
    plain_smtp.set_mode("accept")
    assert send_plain(plain_smtp, "ok") == ["before_data"]
    assert len(plain_smtp.wait_messages("tls-ok@")) == 1
