"""Webhook signatures (checked by the independent ``standardwebhooks`` package), the retry schedule and the address
guard that webhook targets and media URLs share."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.webhooks import schedule
from services.webhooks.endpoints import InvalidWebhookUrl, check_url
from services.webhooks.settings import WebhookSettings, load_webhook_settings
from shared.address_guard import AddressGuard, UrlRefused
from shared.webhook_signature import InvalidSecret, headers, new_secret, secret_key, signature

BODY = b'{"type":"export.completed","timestamp":"2026-12-02T06:00:00Z","data":{"task_id":"t1"}}'


def test_signed_headers_verify_with_the_standardwebhooks_package():
    secret = new_secret()
    now = int(time.time())
    signed = headers(secret, "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, signed)["data"]["task_id"] == "t1"
    assert signed["content-type"] == "application/json" and signed["webhook-timestamp"] == str(now)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_any_change_breaks_the_signature(tamper):
    secret, now = new_secret(), int(time.time())
    signed = headers(secret, "msg_1", now, BODY)
    body, verifier = BODY, Webhook(secret)
    if tamper == "body":
        body = BODY.replace(b"t1", b"t2")
    elif tamper == "id":
        signed["webhook-id"] = "msg_2"
    elif tamper == "timestamp":
        signed["webhook-timestamp"] = str(now - 1)
    else:
        verifier = Webhook(new_secret())
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, signed)


def test_a_known_vector():
    # key bytes 0..31, signed by the package itself: our few lines give the same value
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    expected = Webhook(secret).sign("msg_x", datetime.fromtimestamp(1700000000, tz=UTC), "{}")
    assert signature(secret, "msg_x", 1700000000, b"{}") == expected


def test_generated_secrets_have_the_documented_form():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) >= 24
    assert new_secret() != secret


@pytest.mark.parametrize("bad", ["", "secret", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 8)
                                 .decode(), "whsec_" + base64.b64encode(b"x" * 65).decode()])
def test_chosen_secrets_must_be_whsec_base64_of_24_to_64_bytes(bad):
    with pytest.raises(InvalidSecret):
        secret_key(bad)


def _settings(**overrides: object) -> WebhookSettings:
    base = dict(allow_hosts=(), timeout=10.0, schedule=(5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0),
                retry_every=7200.0, retry_window=86400.0)
    return WebhookSettings(**{**base, **overrides})


def test_backoff_follows_the_schedule_then_every_two_hours():
    s = _settings()
    assert [schedule.delay_after(n, s) for n in range(1, 10)] == [5, 30, 120, 600, 1800, 3600, 7200, 7200, 7200]


def test_retries_stop_24_hours_after_the_first_attempt_with_a_last_one_at_the_end():
    s = _settings()
    first = datetime(2026, 1, 1)
    now, attempts, times = first, 1, []
    while (when := schedule.next_attempt(first, now, attempts, s)) is not None:
        times.append(when)
        now, attempts = when, attempts + 1
    assert times[0] == first + timedelta(seconds=5)
    assert times[-1] == first + timedelta(hours=24)  # cut short to the window's end
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    # 6 scheduled, then 2-hourly from ~1.7 h to 24 h, the last one cut to the window end
    assert len(times) == 6 + 12


def test_schedule_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1,2")
    monkeypatch.setenv("WEBHOOK_RETRY_EVERY", "3")
    monkeypatch.setenv("WEBHOOK_RETRY_WINDOW", "10")
    s = load_webhook_settings()
    assert [schedule.delay_after(n, s) for n in (1, 2, 3, 4)] == [1, 2, 3, 3] and s.retry_window == 10
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1,soon")
    with pytest.raises(ValueError, match="WEBHOOK_RETRY_SCHEDULE"):
        load_webhook_settings()
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1")
    monkeypatch.setenv("WEBHOOK_ALLOW_HOSTS", "bad/entry/x")
    with pytest.raises(ValueError, match="allow-list"):
        load_webhook_settings()


RESOLVES = {"hooks.example.com": ["93.184.216.34"], "inside.example.com": ["10.0.0.7"],
            "mixed.example.com": ["93.184.216.34", "127.0.0.1"], "v6.example.com": ["::ffff:169.254.169.254"]}


def _guard(*allow: str) -> AddressGuard:
    return AddressGuard(allow, resolver=lambda host, port: RESOLVES[host], what="webhook URL")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://[::1]/", "http://10.1.2.3/",
                                 "http://169.254.169.254/latest/meta-data", "https://inside.example.com/",
                                 "https://mixed.example.com/", "https://v6.example.com/", "http://0.0.0.0/"])
def test_non_public_targets_are_refused(url):
    with pytest.raises(UrlRefused) as err:
        _guard().check(url)
    assert err.value.code == "address_not_allowed"


@pytest.mark.parametrize("url,code", [("ftp://hooks.example.com/", "scheme_not_allowed"),
                                      ("file:///etc/passwd", "scheme_not_allowed"),
                                      ("https://user:pw@hooks.example.com/", "bad_url"),
                                      ("https:///nohost", "bad_url"), ("", "bad_url")])
def test_only_plain_http_urls(url, code):
    with pytest.raises(UrlRefused) as err:
        _guard().check(url)
    assert err.value.code == code


def test_public_and_allow_listed_targets_pass():
    target, addresses = _guard().check("https://hooks.example.com/in")
    assert (target.host, target.port, [str(a) for a in addresses]) == ("hooks.example.com", 443, ["93.184.216.34"])
    _guard("127.0.0.1:9000").check("http://127.0.0.1:9000/hook")
    _guard("10.0.0.0/8").check("https://inside.example.com/")
    with pytest.raises(UrlRefused):
        _guard("127.0.0.1:9000").check("http://127.0.0.1:9001/hook")  # the port is part of the entry


def test_creation_refusal_names_the_reason():
    with pytest.raises(InvalidWebhookUrl, match="private address"):
        check_url(_guard(), "http://127.0.0.1:9000/hook")
