"""Backend record validation, secrets redaction, the default backend from environment, and signed link parameters."""

from __future__ import annotations

import json

import pytest

from services.storage.records.config import InvalidBackendConfig, is_secret, normalize, public_config
from services.storage.settings import load_storage_settings
from shared.signing import BadSignature, sign, signed_query, verify, verify_query


def test_token_is_the_kind_credential_and_leaves_the_config():
    config, token = normalize("s3", {"bucket": "b", "access_key_id": "AK", "secret_access_key": "SK"}, None)
    assert token == "SK" and config == {"bucket": "b", "access_key_id": "AK"}
    config, token = normalize("dropbox", {"app_key": "k", "app_secret": "s", "root": "exports/"}, "RT")
    assert token == "RT" and config == {"app_key": "k", "app_secret": "s", "root": "/exports"}


def test_values_are_normalized():
    config, _ = normalize("s3", {"bucket": "b", "access_key_id": "a", "prefix": "p/q", "endpoint_url": "http://h:1/"},
                          "s")
    assert config["prefix"] == "p/q/" and config["endpoint_url"] == "http://h:1"


def test_gcs_credentials_are_a_service_account_key():
    key = {"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----", "client_email": "a@b"}
    config, token = normalize("gcs", {"bucket": "b"}, json.dumps(key))
    assert json.loads(token) == key and config == {"bucket": "b"}
    _, token = normalize("gcs", {"bucket": "b", "credentials": key}, None)  # an object in config works too
    assert json.loads(token) == key
    assert normalize("gcs", {"bucket": "b", "anonymous": True}, None) == ({"bucket": "b", "anonymous": True}, None)


@pytest.mark.parametrize("kind, config, token", [
    ("s3", {"bucket": "b", "access_key_id": "a"}, "s3cr3t-value"),
    ("seafile", {"server_url": "https://s", "repo_id": "r"}, "s3cr3t-value"),
])
def test_error_messages_never_repeat_secrets(kind, config, token):
    bad = {**config, "bucket": 5} if kind == "s3" else {**config, "repo_id": ""}
    with pytest.raises(InvalidBackendConfig) as info:
        normalize(kind, bad, token)
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(InvalidBackendConfig) as info:
        normalize(kind, config, "bad\nsecret s3cr3t-value")
    assert "s3cr3t" not in str(info.value) and "secret" in str(info.value)


def test_public_config_hides_declared_and_secret_looking_keys():
    shown, hidden = public_config("dropbox", {"app_key": "k", "app_secret": "s", "root": "/r"})
    assert shown == {"app_key": "k", "root": "/r"} and hidden == ["app_secret"]
    for name in ("secret", "password", "secret_access_key", "app_secret", "refresh_token", "credentials",
                 "client_password", "private_key"):
        assert is_secret("s3", name), name
    assert not is_secret("s3", "access_key_id") and not is_secret("dropbox", "app_key")


def test_default_backend_from_environment():
    settings = load_storage_settings({})
    assert (settings.backend_kind, settings.keep_days, settings.backend_config) == ("local", 0, {})
    env = {"STORAGE_BACKEND": "s3", "S3_BUCKET": "exports", "S3_ENDPOINT_URL": "http://minio:9000",
           "AWS_DEFAULT_REGION": "eu-west-1", "S3_PART_SIZE": str(16 * 1024 * 1024), "STORAGE_KEEP_DAYS": "30",
           "STORAGE_SWEEP_INTERVAL": "1"}
    settings = load_storage_settings(env)
    assert settings.backend_config == {"bucket": "exports", "endpoint_url": "http://minio:9000",
                                       "region": "eu-west-1", "part_size": 16 * 1024 * 1024}
    assert settings.backend_token is None  # boto3's own chain (AWS_ACCESS_KEY_ID...) then applies
    assert (settings.keep_days, settings.sweep_interval) == (30, 1.0)
    assert "secret" not in repr(load_storage_settings({**env, "S3_ACCESS_KEY_ID": "a",
                                                       "S3_SECRET_ACCESS_KEY": "secret"}))
    with pytest.raises(ValueError, match="S3_BUCKET"):
        load_storage_settings({"STORAGE_BACKEND": "s3"})
    with pytest.raises(ValueError, match="STORAGE_BACKEND"):
        load_storage_settings({"STORAGE_BACKEND": "ftp"})


def test_extra_link_parameters_are_signed():
    extra = {"backend": "team-s3", "retention": "1"}
    query = signed_query("k", "PUT", "a/b", 2_000_000_000, extra=extra)
    args = dict(pair.split("=", 1) for pair in query.split("&"))
    names = ("backend", "retention")
    verify_query("k", "PUT", "a/b", args, extra_names=names)
    for changed in ({**args, "backend": "other"}, {k: v for k, v in args.items() if k != "backend"},
                    {k: v for k, v in args.items() if k != "retention"}):
        with pytest.raises(BadSignature):
            verify_query("k", "PUT", "a/b", changed, extra_names=names)
    # Links without extra parameters keep the signatures they always had.
    assert sign("k", "GET", "a", 5) == sign("k", "GET", "a", 5, extra={})
    verify("k", "GET", "a", 2_000_000_000, None, sign("k", "GET", "a", 2_000_000_000))
