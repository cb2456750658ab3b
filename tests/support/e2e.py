"""End-to-end helpers: a running stack on its own vhost, database and var directory, and an HTTP client for it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.orm import Session

from shared.config import LINK_KEY_LABEL
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.signing import derive_key
from tests.conftest import free_port
from tests.support.rabbit import amqp_uri
from tools.stack import Stack

TERMINAL = ("SUCCESS", "FAILURE")


@dataclass
class Env:
    """Everything one stack needs; ``db()`` opens a session on its database."""

    var_dir: Path
    vhost: str
    database_url: str
    env: dict[str, str]

    def db(self) -> Session:
        return make_session_factory(make_engine(self.database_url))()

    @property
    def link_key(self) -> bytes:
        """The key storage links are signed with (derived from SECRET_KEY, as the services derive it)."""
        return derive_key(self.env["SECRET_KEY"], LINK_KEY_LABEL)


def make_env(tmp: Path, vhost: str, database_url: str | None = None, **extra: str) -> Env:
    var_dir = tmp / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    database_url = database_url or f"sqlite:///{var_dir / 'platform.db'}"
    upgrade_to_head(database_url)
    env = {
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "AMQP_URI": amqp_uri(vhost),
        "GATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "STORAGE_URL": f"http://127.0.0.1:{free_port()}",
        "STORAGE_DIR": str(var_dir / "storage"),
        # Services refuse secrets under 32 bytes; this one is unique per stack and well above that.
        "SECRET_KEY": f"test-secret-{vhost}-{uuid.uuid4().hex}",
        "RPC_TIMEOUT": "5",
        # Nothing listens there: a test's mails never land in a developer's `make run` sink on 8025.
        "SMTP_PORT": str(free_port()),
        **extra,
    }
    return Env(var_dir=var_dir, vhost=vhost, database_url=database_url, env=env)


def start_stack(env: Env, services: tuple[str, ...] | None = None) -> Stack:
    stack = Stack(env=env.env, log_dir=env.var_dir / "log")
    if services is None:
        stack.start_all()
        stack.wait_healthy(timeout=90)
    else:
        stack.start_all(services)
    return stack


class Client:
    """A logged-in (or anonymous) HTTP client of the gateway."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.trust_env = False
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def login(cls, base_url: str, email: str, password: str) -> Client:
        r = requests.post(base_url + "/v1/auth/login", json={"email": email, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        return cls(base_url, r.json()["access_token"])

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def wait_task(self, task_url: str, timeout: float = 60,
                  until: Callable[[dict], bool] = lambda t: t["state"] in TERMINAL) -> dict:
        """Poll a task until ``until`` holds (by default: a terminal state), with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(task_url)
            assert r.status_code == 200, r.text
            task = r.json()
            if until(task):
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_url} still {task} after {timeout} s")
            time.sleep(0.05)
