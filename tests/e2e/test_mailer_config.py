"""Mailer settings from the environment, and the queue names the gateway pre-declares for it (no broker)."""

from __future__ import annotations

import pytest
from nameko.events import EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from services.api_gateway.dependencies import MAIL_QUEUES
from services.mailer.service import MailerService
from services.mailer.settings import load_mail_settings
from shared import contracts

MAIL_VARS = ("SMTP_HOST", "SMTP_PORT", "SMTP_SECURITY", "SMTP_USER", "SMTP_PASSWORD", "MAIL_FROM", "MAIL_REPLY_TO",
             "SMTP_TIMEOUT", "MAIL_RETRY_SECONDS", "MAIL_RETRY_BASE", "MAIL_HEALTH_FAILURES", "EVENT_URL_TEMPLATE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in MAIL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_point_at_the_run_commands_mail_sink(clean_env):
    s = load_mail_settings()
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("127.0.0.1", 8025, "none")
    assert (s.smtp_user, s.smtp_password, s.reply_to) == (None, None, None)
    assert (s.retry_seconds, s.retry_base, s.smtp_timeout) == (3600, 10, 30)
    assert s.sender_address == "platform@localhost" and s.domain == "localhost"
    assert (s.health_failures, s.event_url_template) == (2, None)


def test_everything_is_configurable_and_the_password_never_shows(clean_env):
    values = {"SMTP_HOST": "smtp.example.org", "SMTP_PORT": "465", "SMTP_SECURITY": "TLS", "SMTP_USER": "mailer",
              "SMTP_PASSWORD": "s3cret-pass", "MAIL_FROM": "Events <events@example.org>",
              "MAIL_REPLY_TO": "help@example.org", "SMTP_TIMEOUT": "12.5", "MAIL_RETRY_SECONDS": "60",
              "MAIL_RETRY_BASE": "2"}
    for name, value in values.items():
        clean_env.setenv(name, value)
    s = load_mail_settings()
    assert (s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_user) == ("smtp.example.org", 465, "tls", "mailer")
    assert (s.smtp_timeout, s.retry_seconds, s.retry_base) == (12.5, 60, 2)
    assert s.sender_address == "events@example.org" and s.domain == "example.org"
    assert s.smtp_password == "s3cret-pass" and "s3cret" not in repr(s)


def test_event_url_template_and_health_threshold(clean_env):
    clean_env.setenv("EVENT_URL_TEMPLATE", "https://frontend.example/e/{identifier}?n={id}")
    clean_env.setenv("MAIL_HEALTH_FAILURES", "5")
    s = load_mail_settings()
    assert (s.event_url_template, s.health_failures) == ("https://frontend.example/e/{identifier}?n={id}", 5)


@pytest.mark.parametrize(("name", "value"), [
    ("SMTP_SECURITY", "ssl3"), ("MAIL_FROM", "nobody"),
    ("EVENT_URL_TEMPLATE", "https://frontend.example/e/{slug}"),  # only {id} and {identifier}
    ("EVENT_URL_TEMPLATE", "javascript:alert({id})"),
    ("EVENT_URL_TEMPLATE", "https://frontend.example/e/{id"),
])
def test_bad_settings_stop_the_mailer_at_start(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        load_mail_settings()


def test_the_gateway_declares_exactly_the_mailers_handler_queues():
    declared_by_mailer = {}
    for method_name in dir(MailerService):
        for ep in getattr(getattr(MailerService, method_name), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(ep, EventHandler):
                declared_by_mailer[(ep.source_service, ep.event_type)] = contracts.handler_queue(
                    ep.source_service, ep.event_type, MailerService.name, method_name)
    assert declared_by_mailer == MAIL_QUEUES
