"""Issue 9 items 2, 7, 8, 11 and 12 on the real services over HTTP: weak secrets refused at start, tokens and links
signed with separate keys, tokens that die with their user or password, login limits shared by gateway instances,
clean logs, export warnings without internal addresses, backend secrets encrypted in the database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import jwt
import pytest
import requests
from requests.adapters import HTTPAdapter

from shared.models import events as m
from shared.passwords import hash_password
from shared.signing import signed_query
from tests.conftest import REPO, free_port
from tests.support.e2e import PASSWORD, Client, Env, SystemBase, stack_for
from tools.stack import SERVICES, Stack

PER_ACCOUNT, PER_ADDRESS, WINDOW = 3, 5, 600


# --- helpers -------------------------------------------------------------------------------------------------------

class _SourceAdapter(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def login_from(base_url: str, email: str, password: str, source: str = "127.0.0.1") -> requests.Response:
    """POST the login from a given loopback address: Linux routes all of 127.0.0.0/8 to lo, so each is a distinct
    client address to the gateway."""
    with requests.Session() as http:
        http.trust_env = False
        http.mount("http://", _SourceAdapter(source))
        return http.post(base_url + "/v1/auth/login", json={"email": email, "password": password}, timeout=30)


def cli(env: Env, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=REPO, env={**os.environ, **env.env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@dataclass
class System(SystemBase):
    stack: Stack
    event_id: int


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    users = {"admin": True, "orga": False, "victim": False, "walker": False, "alice": False}
    with stack_for(tmp_path_factory.mktemp("security"), users, LOG_FORMAT="json",
                   LOGIN_MAX_FAILURES_PER_ACCOUNT=str(PER_ACCOUNT), LOGIN_MAX_FAILURES_PER_ADDRESS=str(PER_ADDRESS),
                   LOGIN_FAILURE_WINDOW=str(WINDOW)) as run:
        event_id = run.event("orga", sessions=2)
        with run.env.db() as session:
            # A media URL whose host resolves to loopback: refused by the fetcher, reported as a warning.
            session.get(m.Event, event_id).logo = "http://localhost:9/logo.png"
            session.commit()
        yield System(env=run.env, users=run.users, stack=run.start(), event_id=event_id)


def _upload(system: System, data: bytes = b"private bytes of orga") -> str:
    """The storage data-plane link behind a fresh upload of orga's."""
    r = system.client("orga").post("/v1/upload/file", files={"file": ("notes.txt", data)})
    assert r.status_code == 200, r.text
    media = requests.get(r.json()["url"], allow_redirects=False, timeout=30)
    assert media.status_code == 302, media.text
    return media.headers["Location"]


def _with_query(url: str, query: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=query))


# --- item 2: secrets -----------------------------------------------------------------------------------------------

def _wait_exit(stack: Stack, names: tuple[str, ...], timeout: float) -> dict[str, int | None]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = {name: stack.processes[name].poll() for name in names}
        if all(code is not None for code in codes.values()):
            return codes
        time.sleep(0.2)
    return {name: stack.processes[name].poll() for name in names}


@pytest.mark.parametrize("secret", ["", "only-24-bytes-of-secret!"], ids=["default", "short"])
def test_every_service_refuses_to_start_with_a_weak_secret(tmp_path, secret):
    with stack_for(tmp_path, SECRET_KEY=secret, DEV_MODE="") as run:
        stack = run.start(SERVICES)
        codes = _wait_exit(stack, SERVICES, timeout=90)
        stack.stop_all()
        assert all(code not in (None, 0) for code in codes.values()), codes
        for name in SERVICES:
            log = (run.env.var_dir / "log" / f"{name}.log").read_text()
            assert f"{name} refuses to start: SECRET_KEY" in log, log[-2000:]


def test_dev_mode_runs_with_the_default_secret_and_says_so(tmp_path):
    with stack_for(tmp_path, SECRET_KEY="", DEV_MODE="1") as run:
        env = run.env
        stack = run.start(("storage",))
        deadline = time.monotonic() + 60
        while True:
            assert stack.running("storage"), (env.var_dir / "log" / "storage.log").read_text()[-2000:]
            try:
                if requests.get(env.env["STORAGE_URL"] + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "storage did not start in DEV_MODE"
            time.sleep(0.2)
        stack.stop_all()
        assert "Running anyway because DEV_MODE=1" in (env.var_dir / "log" / "storage.log").read_text()


def test_tokens_and_links_forged_with_the_secret_itself_or_the_other_key_are_refused(system):
    secret = system.env.env["SECRET_KEY"]
    now = int(time.time())
    # With the root secret itself (what every token was signed with before the keys were separated).
    forged = jwt.encode({"sub": str(system.users["admin"]), "iat": now, "exp": now + 600}, secret, algorithm="HS256")
    r = Client(system.url, forged).get("/v1/events")
    assert r.status_code == 401, r.text

    from shared.config import LINK_KEY_LABEL, TOKEN_KEY_LABEL
    from shared.signing import derive_key

    token_key, link_key = derive_key(secret, TOKEN_KEY_LABEL), derive_key(secret, LINK_KEY_LABEL)
    # With the link key, with or without the password stamp a real token carries.
    for claims in ({}, {"pws": "x"}):
        forged = jwt.encode({"sub": str(system.users["admin"]), "iat": now, "exp": now + 600, **claims}, link_key,
                            algorithm="HS256")
        assert Client(system.url, forged).get("/v1/events").status_code == 401

    link = _upload(system)
    assert requests.get(link, timeout=30).content == b"private bytes of orga"
    parts = urlsplit(link)
    object_key = parts.path.split("/objects/", 1)[1]
    args = dict(parse_qsl(parts.query))
    expires = int(args["expires"])
    for key in (secret, token_key):
        forged_get = _with_query(link, signed_query(key, "GET", object_key, expires, args.get("filename")))
        assert requests.get(forged_get, timeout=30).status_code == 403
        forged_put = _with_query(link, signed_query(key, "PUT", "uploads/planted.txt", expires))
        forged_put = forged_put.replace(object_key, "uploads/planted.txt")
        assert requests.put(forged_put, data=b"planted", timeout=30).status_code == 403


# --- item 7: tokens die with their user and their password -----------------------------------------------------------

def test_a_deleted_users_token_does_not_become_the_next_users(system):
    out = cli(system.env, "create-user", "--email", "temp@example.org", "--password", PASSWORD, "--admin")
    old_id = int(out.split()[1])
    token = Client.login(system.url, "temp@example.org", PASSWORD).http.headers["Authorization"]
    with system.env.db() as session:  # the highest id, deleted: SQLite without AUTOINCREMENT hands it out again
        assert old_id == max(u.id for u in session.query(m.User))
        session.delete(session.get(m.User, old_id))
        session.commit()
    out = cli(system.env, "create-user", "--email", "newcomer@example.org", "--password", "other pass", "--admin")
    new_id = int(out.split()[1])
    stale = requests.get(system.url + "/v1/events", headers={"Authorization": token}, timeout=30)
    assert stale.status_code == 401, stale.text
    assert new_id != old_id
    newcomer = Client.login(system.url, "newcomer@example.org", "other pass")
    assert newcomer.get("/v1/events").status_code == 200
    # The operator command does the same.
    cli(system.env, "delete-user", "--email", "newcomer@example.org")
    assert newcomer.get("/v1/events").status_code == 401


def test_a_password_change_revokes_the_tokens_issued_before(system):
    cli(system.env, "create-user", "--email", "changer@example.org", "--password", PASSWORD)
    before = Client.login(system.url, "changer@example.org", PASSWORD)
    assert before.get("/v1/import-jobs").status_code == 200
    cli(system.env, "create-user", "--email", "changer@example.org", "--password", "second", "--update")
    r = before.get("/v1/import-jobs")
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked", r.text
    # The dedicated command.
    second = Client.login(system.url, "changer@example.org", "second")
    assert second.get("/v1/import-jobs").status_code == 200
    cli(system.env, "set-password", "--email", "changer@example.org", "--password", "a new password")
    assert second.get("/v1/import-jobs").status_code == 401
    assert login_from(system.url, "changer@example.org", "second", "127.0.0.9").status_code == 401
    after = Client.login(system.url, "changer@example.org", "a new password")
    assert after.get("/v1/import-jobs").status_code == 200


# --- item 8: login limits ------------------------------------------------------------------------------------------

def _assert_429(r: requests.Response) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_attempts"
    retry_after = int(r.headers["Retry-After"])
    assert 0 < retry_after <= WINDOW
    return retry_after


def test_failed_logins_lock_the_account_with_retry_after(system):
    for _ in range(PER_ACCOUNT):
        assert login_from(system.url, "victim@example.org", "guess", "127.0.0.2").status_code == 401
    # Locked for everyone, even with the right password: guessing must stop, not just slow down.
    _assert_429(login_from(system.url, "victim@example.org", PASSWORD, "127.0.0.2"))
    _assert_429(login_from(system.url, "victim@example.org", PASSWORD, "127.0.0.3"))
    # The address itself is under its own limit: another account logs in from it.
    assert login_from(system.url, "walker@example.org", PASSWORD, "127.0.0.2").status_code == 200


def test_failed_logins_lock_the_address_but_not_other_addresses(system):
    for n in range(PER_ADDRESS):  # one failure per account: no account reaches its limit
        assert login_from(system.url, f"nobody{n}@example.org", "guess", "127.0.0.4").status_code == 401
    _assert_429(login_from(system.url, "alice@example.org", PASSWORD, "127.0.0.4"))
    assert login_from(system.url, "alice@example.org", PASSWORD, "127.0.0.5").status_code == 200


def test_login_limits_are_shared_by_gateway_instances(system):
    second = Stack(env={**system.env.env, "GATEWAY_URL": f"http://127.0.0.1:{free_port()}"},
                   log_dir=system.env.var_dir / "log2")
    second.start("api_gateway")
    try:
        second.wait_healthy(timeout=90)
        gateways = [system.url, second.gateway_url]
        with system.env.db() as session:
            session.add(m.User(email="shared@example.org", password_hash=hash_password(PASSWORD)))
            session.commit()
        for n in range(PER_ACCOUNT):
            r = login_from(gateways[n % 2], "shared@example.org", "guess", "127.0.0.6")
            assert r.status_code == 401, r.text
        for url in gateways:
            _assert_429(login_from(url, "shared@example.org", PASSWORD, "127.0.0.7"))
    finally:
        second.stop_all()


# --- item 11: warnings and logs ------------------------------------------------------------------------------------

def test_export_warnings_do_not_reveal_what_a_host_resolves_to(system):
    orga = system.client("orga")
    r = orga.post(f"/v1/events/{system.event_id}/export/json", json={"image": True})
    assert r.status_code == 202, r.text
    task = orga.wait_task(r.json()["task_url"], timeout=120)
    assert task["state"] == "SUCCESS", task
    warnings = [w for w in task["result"]["warnings"] if w["url"] == "http://localhost:9/logo.png"]
    assert [w["code"] for w in warnings] == ["address_not_allowed"], task["result"]["warnings"]
    message = warnings[0]["message"]
    assert "private address" in message and "127.0.0.1" not in message and "::1" not in message, message


def test_logs_are_json_without_query_strings_tracebacks_or_sql_parameters(system):
    # Traffic that used to leave secrets and noise behind: 4xx answers, signed links, a query string on the gateway.
    assert requests.get(system.url + "/v1/events?access_token=QUERY-SECRET", timeout=30).status_code == 401
    assert login_from(system.url, "orga@example.org", "PASSWORD-IN-LOG?", "127.0.0.10").status_code == 401
    link = _upload(system, b"for the log test")
    assert requests.get(link, timeout=30).status_code == 200
    signature = dict(parse_qsl(urlsplit(link).query))["signature"]
    assert requests.get(link.replace(signature, "0" * 64), timeout=30).status_code == 403

    def logs() -> dict[str, str]:
        return {p.name: p.read_text() for p in (system.env.var_dir / "log").glob("*.log")}

    deadline = time.monotonic() + 10  # access lines are written when the response is finished: poll for them
    while "/v1/events" not in logs()["api_gateway.log"] or "/objects/" not in logs()["storage.log"]:
        assert time.monotonic() < deadline, "access log lines did not appear"
        time.sleep(0.1)
    access = []
    for name, text in logs().items():
        for secret in ("signature=", signature, "QUERY-SECRET", "expires=", "PASSWORD-IN-LOG", "Traceback"):
            assert secret not in text, (name, secret)
        for line in text.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                assert {"time", "level", "logger", "message"} <= set(record)
                if record["logger"] == "nameko.web.server":
                    access.append(record["message"])
    assert any("/objects/uploads/" in line and "?…" in line for line in access), access
    assert any("/v1/events?… " in line and '" 401 ' in line for line in access), access


# --- item 12: backend secrets at rest ------------------------------------------------------------------------------

def test_backend_secrets_are_encrypted_in_the_database_and_plain_rows_get_encrypted(system):
    admin = system.client("admin")
    # Inactive: no Dropbox answers here, and a record is checked against its backend only once it is active.
    body = {"storage_backend": "dropbox", "storage_backend_id": "team-box", "token": "REFRESH-TOKEN-PLAIN",
            "config": {"app_key": "app-key-1", "app_secret": "APP-SECRET-PLAIN"}, "active": False}
    r = admin.post("/v1/admin/storage-backends", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["token_set"] is True and "app_secret" in r.json()["secrets_set"]
    db_path = Path(system.env.database_url.split("///", 1)[1])

    def raw_row(identifier: str) -> tuple[str, dict]:
        with sqlite3.connect(db_path) as raw:
            token, config = raw.execute("SELECT token, config FROM storage_backends WHERE storage_backend_id = ?",
                                        (identifier,)).fetchone()
        return token, json.loads(config)

    token, config = raw_row("team-box")
    assert "REFRESH-TOKEN-PLAIN" not in token and "APP-SECRET-PLAIN" not in json.dumps(config)
    assert config["app_key"] == "app-key-1"  # not a secret: stays readable for operators
    # A change through the API keeps the secrets (decrypted, merged, encrypted again).
    r = admin.request("PATCH", "/v1/admin/storage-backends/team-box", json={"description": "team"})
    assert r.status_code == 200 and r.json()["token_set"] is True, r.text
    assert "REFRESH-TOKEN-PLAIN" not in raw_row("team-box")[0]

    # A row stored in plain text by an earlier version is encrypted when storage starts.
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO storage_backends (storage_backend, storage_backend_id, token, config, keep_days, "
                    "description, active, created_at, updated_at) VALUES ('seafile', 'legacy', 'LEGACY-TOKEN', ?, 0,"
                    " NULL, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
                    (json.dumps({"server_url": "https://seafile.example.org", "repo_id": "r"}),))
    system.stack.stop("storage")
    system.stack.start("storage")
    system.stack.wait_healthy(timeout=90)
    token, _ = raw_row("legacy")
    assert "LEGACY-TOKEN" not in token, token
    r = admin.get("/v1/admin/storage-backends/legacy")
    assert r.status_code == 200 and r.json()["token_set"] is True, r.text

