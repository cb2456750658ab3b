"""Security pieces without a broker: secrets and derived keys, the login path's hash work, migration 0005, secrets
at rest, log hygiene, media fetch messages. The services themselves are driven over HTTP in test_security_e2e.py."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import stat
import sys
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet

from services.api_gateway import auth, login
from services.storage.records import admin as backend_records
from shared import passwords, secretbox
from shared.config import (
    DEV_SECRET_KEY,
    TOKEN_KEY_LABEL,
    InsecureSecret,
    check_service_secrets,
    ensure_local_secret,
    load_settings,
)
from shared.db import alembic_config, make_engine, make_session_factory, upgrade_to_head
from shared.http import ApiError
from shared.logs import Hygiene, JsonFormatter, TextFormatter
from shared.media_fetcher import MediaFetcher, MediaFetchError
from shared.models import gateway as m
from shared.models.base import utcnow
from shared.models.events import EventRole, User
from shared.models.storage import StorageBackendRecord, reseal_record, reseal_secrets
from shared.signing import BadSignature, derive_key, sign, verify

GOOD_SECRET = "a-perfectly-random-secret-of-40-bytes-xx"


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SECRET_KEY", "DEV_MODE", "TOKEN_SECRET_KEY", "LINK_SECRET_KEY", secretbox.KEYS_VAR):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- secrets and derived keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", [None, DEV_SECRET_KEY, "short-secret", "x" * 31])
def test_weak_secrets_are_refused_outside_dev_mode(clean_env, capsys, secret):
    if secret is not None:
        clean_env.setenv("SECRET_KEY", secret)
    with pytest.raises(InsecureSecret, match="SECRET_KEY"):
        check_service_secrets(load_settings(), "storage")
    assert "storage refuses to start" in capsys.readouterr().err
    clean_env.setenv("DEV_MODE", "1")
    check_service_secrets(load_settings(), "storage")
    assert "DEV_MODE=1" in capsys.readouterr().err


def test_a_strong_secret_starts_and_gives_distinct_keys(clean_env):
    clean_env.setenv("SECRET_KEY", GOOD_SECRET)
    settings = load_settings()
    check_service_secrets(settings, "api_gateway")
    keys = {settings.token_key, settings.link_key, GOOD_SECRET.encode()}
    assert len(keys) == 3 and all(len(k) >= 32 for k in keys)
    assert settings.token_key == derive_key(GOOD_SECRET, TOKEN_KEY_LABEL)
    clean_env.setenv("LINK_SECRET_KEY", "L" * 32)
    clean_env.setenv("TOKEN_SECRET_KEY", "short")
    settings = load_settings()
    assert settings.link_key == b"L" * 32
    with pytest.raises(InsecureSecret, match="TOKEN_SECRET_KEY"):
        check_service_secrets(settings, "api_gateway")


def test_a_token_is_not_a_link_and_a_link_is_not_a_token(clean_env):
    clean_env.setenv("SECRET_KEY", GOOD_SECRET)
    settings = load_settings()
    # A link signed with the token key does not verify as a link...
    forged = sign(settings.token_key, "GET", "exports/x.zip", 2_000_000_000, None)
    with pytest.raises(BadSignature):
        verify(settings.link_key, "GET", "exports/x.zip", 2_000_000_000, None, forged, now=0)
    # ...nor one signed with the root secret itself.
    with pytest.raises(BadSignature):
        verify(settings.link_key, "GET", "exports/x.zip", 2_000_000_000, None,
               sign(GOOD_SECRET, "GET", "exports/x.zip", 2_000_000_000, None), now=0)
    # A token signed with the link key (or the root secret) is not a token.
    user = User(id=1, email="a@example.org", password_hash="h")
    for key in (settings.link_key, GOOD_SECRET.encode()):
        token = auth.issue_token(user, key, 60)
        with pytest.raises(ApiError) as err:
            auth.read_token(f"Bearer {token}", settings.token_key)
        assert err.value.status == 401
    # A huge or non-numeric sub is an invalid token, never a database error.
    for sub in ("1" * 30, "-1", "abc"):
        token = jwt.encode({"sub": sub, "exp": 2_000_000_000, "pws": "x"}, settings.token_key, algorithm="HS256")
        with pytest.raises(ApiError) as err:
            auth.read_token(f"Bearer {token}", settings.token_key)
        assert err.value.code == "invalid_token"


def test_the_run_command_secret_is_generated_once_private_and_reused(clean_env, tmp_path, capsys):
    first = ensure_local_secret(tmp_path / "var")["SECRET_KEY"]
    path = tmp_path / "var" / "secret_key"
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated" in capsys.readouterr().out
    assert ensure_local_secret(tmp_path / "var")["SECRET_KEY"] == first
    assert "using the one generated earlier" in capsys.readouterr().out
    clean_env.setenv("SECRET_KEY", GOOD_SECRET)
    assert ensure_local_secret(tmp_path / "var")["SECRET_KEY"] == GOOD_SECRET


# --- login: an unknown email costs the same hash work ---------------------------------------------------------------

def test_unknown_emails_run_the_same_password_hash_as_wrong_passwords(sqlite_url, monkeypatch):
    upgrade_to_head(sqlite_url)
    factory = make_session_factory(make_engine(sqlite_url))
    with factory() as session:
        session.add(User(email="known@example.org", password_hash=passwords.hash_password("right")))
        session.commit()
    calls = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(*args, **kwargs):  # the KDF werkzeug's check_password_hash runs
        calls.append(kwargs.get("n"))
        return real_scrypt(*args, **kwargs)

    limits = login.Limits(per_account=100, per_address=100, window=60)
    passwords.verify_unknown_user("warm up")  # the dummy hash is made once; count only verifications below
    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    costs = {}
    for email in ("known@example.org", "nobody@example.org"):
        calls.clear()
        with factory() as session, pytest.raises(ApiError) as err:
            login.log_in(session, email, "wrong", "192.0.2.1", limits, b"k" * 32, 60)
        assert (err.value.status, err.value.code) == (401, "invalid_credentials")
        assert len(calls) == 1, (email, calls)
        costs[email] = calls[0]
    assert costs["known@example.org"] == costs["nobody@example.org"]  # same KDF parameters, so the same work


def test_login_limits_on_both_databases(database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory() as session:
        session.add(User(email="u@example.org", password_hash=passwords.hash_password("right")))
        session.commit()
    limits = login.Limits(per_account=2, per_address=4, window=600)

    def attempt(email: str, password: str, address: str) -> ApiError | str:
        with factory() as session:
            try:
                return login.log_in(session, email, password, address, limits, b"k" * 32, 60)
            except ApiError as exc:
                return exc

    assert attempt("u@example.org", "wrong", "192.0.2.1").status == 401
    assert isinstance(attempt("u@example.org", "right", "192.0.2.1"), str)  # success clears the account counter
    for _ in range(2):
        assert attempt("u@example.org", "wrong", "192.0.2.1").status == 401
    locked = attempt("u@example.org", "right", "192.0.2.2")
    assert locked.status == 429 and 0 < int(locked.headers["Retry-After"]) <= 600
    assert attempt("x@example.org", "wrong", "192.0.2.1").status == 401  # the address's fourth failure
    assert attempt("y@example.org", "wrong", "192.0.2.1").status == 429
    # The window ends: everything is allowed again (the rows are moved back in time rather than waiting).
    with factory() as session:
        session.execute(sa.update(m.LoginThrottle).values(window_start=utcnow() - timedelta(seconds=601)))
        session.commit()
    assert isinstance(attempt("u@example.org", "right", "192.0.2.1"), str)


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies():
    assert login.client_address("10.0.0.5", "1.2.3.4", ()) == "10.0.0.5"
    assert login.client_address("10.0.0.5", "6.6.6.6, 1.2.3.4", ("10.0.0.0/8",)) == "1.2.3.4"
    assert login.client_address("10.0.0.5", "1.2.3.4, 10.0.0.7", ("10.0.0.0/8",)) == "1.2.3.4"
    assert login.client_address("192.0.2.9", "1.2.3.4", ("10.0.0.0/8",)) == "192.0.2.9"


# --- migration 0005: ids never reused ------------------------------------------------------------------------------

def test_migration_0005_keeps_users_and_roles_and_never_reuses_ids(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    command.upgrade(alembic_config(url), "0004")
    raw = sqlite3.connect(tmp_path / "p.db")
    raw.execute("INSERT INTO users (id, email, password_hash, is_admin, created_at) VALUES "
                "(1, 'a@x', 'h', 1, '2026-01-01'), (2, 'b@x', 'h', 0, '2026-01-01')")
    raw.commit()
    raw.close()
    upgrade_to_head(url)
    factory = make_session_factory(make_engine(url))
    with factory() as session:
        assert [(u.id, u.email, u.is_admin) for u in session.scalars(sa.select(User).order_by(User.id))] == [
            (1, "a@x", True), (2, "b@x", False)]
        session.delete(session.get(User, 2))
        session.commit()
        session.add(User(email="c@x", password_hash="h"))
        session.commit()
        assert session.scalar(sa.select(User.id).where(User.email == "c@x")) == 3


def test_roles_survive_the_users_rebuild(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    command.upgrade(alembic_config(url), "0004")
    factory = make_session_factory(make_engine(url))
    from tools.synthetic import create_synthetic_event

    with factory() as session:
        session.execute(sa.text("INSERT INTO users (email, password_hash, is_admin, created_at) "
                                "VALUES ('o@x', 'h', 0, '2026-01-01')"))
        user_id = session.scalar(sa.text("SELECT id FROM users"))
        create_synthetic_event(session, sessions=1, owner_user_id=user_id)
        session.commit()
    upgrade_to_head(url)
    with factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(EventRole)) == 1


# --- SQL parameters stay out of error messages -----------------------------------------------------------------------

def test_database_errors_do_not_carry_parameters(sqlite_url):
    upgrade_to_head(sqlite_url)
    factory = make_session_factory(make_engine(sqlite_url))
    with factory() as session:
        session.add(User(email="dup@example.org", password_hash="h"))
        session.commit()
    with factory() as session:
        session.add(User(email="dup@example.org", password_hash="secret-hash-value"))
        with pytest.raises(sa.exc.IntegrityError) as err:
            session.commit()
    assert "secret-hash-value" not in str(err.value) and "dup@example.org" not in str(err.value)


# --- secrets at rest ------------------------------------------------------------------------------------------------

def _raw_backend_row(path) -> tuple[str, str]:
    with sqlite3.connect(path) as raw:
        return raw.execute("SELECT token, config FROM storage_backends").fetchone()


def test_backend_secrets_are_encrypted_rotatable_and_plain_rows_get_resealed(tmp_path, clean_env):
    clean_env.setenv("SECRET_KEY", GOOD_SECRET)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade_to_head(url)
    factory = make_session_factory(make_engine(url))
    body = {"storage_backend": "seafile", "storage_backend_id": "team", "token": "TOKEN-PLAIN-1",
            "config": {"server_url": "https://seafile.example.org", "repo_id": "r1"}}
    with factory() as session:
        backend_records.create(session, body, lambda spec, active: None)
        session.add(StorageBackendRecord(storage_backend="dropbox", storage_backend_id="box", token="REFRESH-PLAIN",
                                         config={"app_key": "k1", "app_secret": "APP-SECRET-PLAIN"},
                                         keep_days=0, active=True))
        session.commit()
    with sqlite3.connect(tmp_path / "p.db") as raw:
        rows = raw.execute("SELECT token, config FROM storage_backends ORDER BY id").fetchall()
    text = json.dumps(rows)
    assert "TOKEN-PLAIN-1" not in text and "REFRESH-PLAIN" not in text and "APP-SECRET-PLAIN" not in text
    assert all(token.startswith(secretbox.PREFIX) for token, _ in rows)
    assert json.loads(rows[1][1])["app_key"] == "k1"  # what is not secret stays readable

    def read(identifier: str) -> StorageBackendRecord:
        with factory() as session:
            return session.scalar(sa.select(StorageBackendRecord).where(
                StorageBackendRecord.storage_backend_id == identifier))

    assert read("box").config["app_secret"] == "APP-SECRET-PLAIN" and read("team").token == "TOKEN-PLAIN-1"

    # Rotation: a new key first, the old one still listed -> readable; resealed -> the old key can go.
    old_key = secretbox.keys_from_env()[0].decode()
    new_key = Fernet.generate_key().decode()
    clean_env.setenv(secretbox.KEYS_VAR, f"{new_key},{old_key}")
    assert read("team").token == "TOKEN-PLAIN-1"
    with factory() as session:
        assert reseal_secrets(session) == 2
    clean_env.setenv(secretbox.KEYS_VAR, new_key)
    assert read("team").token == "TOKEN-PLAIN-1" and read("box").config["app_secret"] == "APP-SECRET-PLAIN"
    clean_env.setenv(secretbox.KEYS_VAR, Fernet.generate_key().decode())
    with pytest.raises(secretbox.SecretsKeyError, match=secretbox.KEYS_VAR):
        read("team")
    clean_env.setenv(secretbox.KEYS_VAR, new_key)

    # A row stored in plain text before encryption existed is read as such, and encrypted by the reseal.
    with sqlite3.connect(tmp_path / "p.db") as raw:
        raw.execute("UPDATE storage_backends SET token = 'LEGACY-PLAIN', config = ? WHERE storage_backend_id = 'box'",
                    (json.dumps({"app_key": "k1", "app_secret": "LEGACY-APP-SECRET"}),))
    assert read("box").token == "LEGACY-PLAIN"
    with factory() as session:
        reseal_secrets(session)
    with sqlite3.connect(tmp_path / "p.db") as raw:
        token, config = raw.execute("SELECT token, config FROM storage_backends WHERE storage_backend_id = 'box'"
                                    ).fetchone()
    assert token.startswith(secretbox.PREFIX) and "LEGACY" not in token + config
    assert read("box").config["app_secret"] == "LEGACY-APP-SECRET"



def test_a_reseal_never_writes_back_values_an_admin_changed_meanwhile(tmp_path, clean_env):
    # Two storage instances: one starts (reads the records to reseal them) while an admin's PATCH, served by the
    # other, changes a record. The starting instance's write must not restore the old token.
    clean_env.setenv("SECRET_KEY", GOOD_SECRET)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade_to_head(url)
    factory = make_session_factory(make_engine(url))
    body = {"storage_backend": "seafile", "storage_backend_id": "team", "token": "OLD-TOKEN",
            "config": {"server_url": "https://seafile.example.org", "repo_id": "r1"}}
    with factory() as session:
        backend_records.create(session, body, lambda spec, active: None)
        record = session.scalar(sa.select(StorageBackendRecord))
        seen = (record.id, record.token, record.config, record.updated_at)
    with factory() as session:
        backend_records.update(session, "team", {"token": "NEW-TOKEN"}, lambda spec, active: None)
    with factory() as session:
        assert not reseal_record(session, *seen)
        assert session.scalar(sa.select(StorageBackendRecord)).token == "NEW-TOKEN"
        assert reseal_secrets(session) == 1  # unchanged since read: resealed
        assert session.scalar(sa.select(StorageBackendRecord)).token == "NEW-TOKEN"

def test_every_declared_secret_is_encrypted_by_name():
    from services.storage.records.config import FIELDS

    declared = [name for fields in FIELDS.values() for name, f in fields.items() if f.secret]
    assert declared and all(secretbox.is_secret_name(name) for name in declared)


# --- log hygiene ----------------------------------------------------------------------------------------------------

def _emit(formatter: logging.Formatter, logger: str, msg: str, *args, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(Hygiene())
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        if exc:
            try:
                raise ApiError(401, "unauthorized", "Authentication required")
            except ApiError as error:
                log.warning(msg, *args, error, exc_info=True)
        else:
            log.info(msg, *args)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    return stream.getvalue()


def test_logs_cut_query_strings_and_tracebacks_of_expected_errors():
    line = _emit(TextFormatter(), "t.access", '127.0.0.1 - - "%s" 200',
                 "GET /objects/exports/a.zip?expires=1&signature=abcdef HTTP/1.1")
    assert "signature" not in line and "/objects/exports/a.zip?…" in line
    line = _emit(TextFormatter(), "t.containers", "(expected) error handling worker %s: %s", "<worker>", exc=True)
    assert "Authentication required" in line and "Traceback" not in line
    record = json.loads(_emit(JsonFormatter(), "t.json", "link https://s3.example.org/b/k?X-Amz-Signature=ff"))
    assert record["message"] == "link https://s3.example.org/b/k?…" and record["level"] == "INFO"


def test_the_deploy_logging_config_uses_the_hygiene_filter_and_json(tmp_path):
    import subprocess

    code = (
        "import logging, logging.config, yaml, nameko.cli.main as m; m.setup_yaml_parser();"
        "cfg = yaml.safe_load(open('deploy/nameko.yml'));"
        "logging.config.dictConfig(cfg['LOGGING']);"
        "logging.getLogger('nameko.web.server').info('GET /objects/k?signature=abc HTTP/1.1');"
        "logging.getLogger('sqlalchemy.engine.Engine').info('SELECT secret')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LOG_FORMAT": "json"},
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [r["message"] for r in lines] == ["GET /objects/k?… HTTP/1.1"], out.stderr


# --- media fetch messages ---------------------------------------------------------------------------------------------

def test_media_errors_do_not_reveal_internal_addresses():
    fetcher = MediaFetcher(resolver=lambda host, port: ["10.1.2.3"])
    with pytest.raises(MediaFetchError) as err:
        fetcher.open("http://media.example.org/logo.png")
    assert err.value.code == "address_not_allowed"
    assert "10.1.2.3" not in str(err.value) and "private address" in str(err.value)
    # Allowed, but nothing listens: the connection error must not name the address either.
    fetcher = MediaFetcher(allow_hosts=["media.internal.test:9"], resolver=lambda host, port: ["127.0.0.1"],
                           timeout=5)
    with pytest.raises(MediaFetchError) as err:
        fetcher.open("http://media.internal.test:9/logo.png")
    assert err.value.code == "connection_failed" and "127.0.0.1" not in str(err.value), str(err.value)
