"""SMTP_SECURITY and credentials against a real aiosmtpd server with STARTTLS / implicit TLS and AUTH (no broker)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from services.mailer.smtp import SmtpTransport, TemporaryFailure
from tests.smtp_server import SmtpServer
from tests.test_mailer_delivery import settings

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
