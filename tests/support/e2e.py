"""End-to-end helpers: a running stack on its own vhost, database and var directory, and an HTTP client for it.

``stack_for(..., replicas={"exporter": 3, "storage": 2})`` runs that many instances of a service (the others run
once). Several storage instances sit behind a round-robin TCP proxy listening on ``STORAGE_URL`` (what a load
balancer is in production: signed links name one address); several gateways each answer on their own port
(``Running.gateway_urls``), the first on ``GATEWAY_URL``. ``Running.kill`` / ``Running.restart`` stop one instance
with ``kill -9`` and start it again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.orm import Session

from shared.config import LINK_KEY_LABEL
from shared.db import make_engine, make_session_factory, upgrade_to_head
from shared.models import events as m
from shared.passwords import hash_password
from shared.signing import derive_key
from tests.conftest import free_port
from tests.support.rabbit import amqp_uri, consumers, create_vhost, delete_vhost
from tests.support.tcp_proxy import TcpProxy
from tools.stack import SERVICES, Stack, free_address, instance_name
from tools.synthetic import create_synthetic_event

TERMINAL = ("SUCCESS", "FAILURE")
PASSWORD = "correct horse battery staple"


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
        "STORAGE_DIR": str(var_dir / "storage"),
        "DATABASE_URL": database_url,
        "AMQP_URI": amqp_uri(vhost),
        "GATEWAY_URL": f"http://127.0.0.1:{free_port()}",
        "STORAGE_URL": f"http://127.0.0.1:{free_port()}",
        # Services refuse secrets under 32 bytes; this one is unique per stack and well above that.
        "SECRET_KEY": f"test-secret-{vhost}-{uuid.uuid4().hex}",
        "RPC_TIMEOUT": "5",
        # Nothing listens there: a test's mails never land in a developer's `make run` sink on 8025.
        "SMTP_PORT": str(free_port()),
        **extra,
    }
    return Env(var_dir=var_dir, vhost=vhost, database_url=database_url, env=env)


def add_users(env: Env, names: dict[str, bool]) -> dict[str, int]:
    """Users ``<name>@example.org`` with PASSWORD; ``names`` maps each name to whether it is an admin."""
    with env.db() as session:
        users = {name: m.User(email=f"{name}@example.org", password_hash=hash_password(PASSWORD), is_admin=admin)
                 for name, admin in names.items()}
        session.add_all(users.values())
        session.commit()
        return {name: user.id for name, user in users.items()}


def add_synthetic_event(env: Env, owner_user_id: int, sessions: int, **options: object) -> int:
    with env.db() as session:
        event_id = create_synthetic_event(session, sessions=sessions, owner_user_id=owner_user_id, **options)
        session.commit()
        return event_id


# Services whose every instance consumes its ``rpc-<service>`` queue (health): how a test knows an instance is up.
RPC_SERVICES = ("storage", "exporter", "importer", "mailer")


def start_stack(env: Env, services: tuple[str, ...] | None = None, replicas: Mapping[str, int] | None = None,
                addresses: Mapping[str, str] | None = None) -> Stack:
    """All five services (``replicas`` of each, default 1) waited for until healthy, or just ``services``."""
    stack = Stack(env=env.env, log_dir=env.var_dir / "log", addresses=dict(addresses or {}))
    try:
        if services is None:
            for service in SERVICES:
                stack.scale(service, (replicas or {}).get(service, 1))
            stack.wait_healthy(timeout=90)
            if replicas:
                wait_instances(env.vhost, stack)
        else:
            stack.start_all(services)
    except BaseException:
        stack.stop_all()  # a stack that never got healthy must not keep its services running
        raise
    return stack


def wait_instances(vhost: str, stack: Stack, timeout: float = 90) -> None:
    """Until every running instance takes messages: each one of an RPC service consumes its ``rpc-`` queue (the
    broker's count), each gateway answers /health."""
    deadline = time.monotonic() + timeout
    for service in RPC_SERVICES:
        want = len(stack.instances(service))
        while (have := consumers(vhost, f"rpc-{service}")) != want:
            for name in stack.instances(service):
                if not stack.running(name):
                    raise RuntimeError(f"{name} exited with {stack.processes[name].returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{service}: {have} of {want} instances consume after {timeout} s")
            time.sleep(0.2)
    stack.wait_healthy(timeout=max(1.0, deadline - time.monotonic()))


@dataclass
class SystemBase:
    """What a test reaches a stack through: its env, its users (name -> id), the gateway, logged-in clients."""

    env: Env
    users: dict[str, int]

    @property
    def url(self) -> str:
        return self.env.env["GATEWAY_URL"]

    @property
    def storage(self) -> str:
        return self.env.env["STORAGE_URL"]

    def log_text(self) -> str:
        """Every service's log so far."""
        return "".join(p.read_text(errors="replace") for p in (self.env.var_dir / "log").glob("*.log"))

    def client(self, who: str) -> Client:
        return Client.login(self.url, f"{who}@example.org", PASSWORD)


@dataclass
class Running(SystemBase):
    """One test's stack in the making: its env and users now, its services once ``start()`` ran."""

    stacks: list[Stack] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)  # instances per service (absent: one)
    addresses: dict[str, str] = field(default_factory=dict)  # instance name -> its HTTP bind address, if fixed
    storage_proxy: TcpProxy | None = None  # in front of the storage instances when there are several

    @property
    def vhost(self) -> str:
        return self.env.vhost

    @property
    def stack(self) -> Stack:
        return self.stacks[0]

    @property
    def gateway_urls(self) -> list[str]:
        """The base URL of every gateway instance (the first is ``url``)."""
        return [self.stack.url(name) for name in self.stack.instances("api_gateway")] if self.stacks else [self.url]

    def start(self, services: tuple[str, ...] | None = None) -> Stack:
        """Start the services (all five, ``replicas`` of each, and wait until healthy, or just ``services``);
        stopped when the block ends."""
        stack = start_stack(self.env, services, self.replicas, self.addresses)
        self.stacks.append(stack)
        return stack

    def kill(self, name: str) -> int:
        """``kill -9`` one instance (``exporter.1``); its pid. What it held is redelivered to the others."""
        pid = self.stack.processes[name].pid
        self.stack.stop(name, kill=True)
        return pid

    def restart(self, *names: str) -> None:
        """Start stopped or killed instances again (same HTTP ports) and wait until they take messages."""
        for name in names:
            self.stack.start(name)
        wait_instances(self.vhost, self.stack)

    def pid(self, name: str) -> int:
        return self.stack.processes[name].pid

    def event(self, owner: str, sessions: int, **options: object) -> int:
        """A synthetic event owned by user ``owner``; its id."""
        return add_synthetic_event(self.env, self.users[owner], sessions, **options)


@contextmanager
def stack_for(tmp: Path, users: dict[str, bool] | None = None, database_url: str | None = None,
              replicas: Mapping[str, int] | None = None, **extra: str) -> Iterator[Running]:
    """A vhost, an env (``extra`` on top of the defaults) and ``users`` for one stack, whose ``start()`` runs
    ``replicas`` instances of the services named there; what ``start()`` started is stopped (and the storage proxy,
    and the vhost deleted) when the block ends, however it ends (a failed set-up included)."""
    vhost = create_vhost()
    running: Running | None = None
    try:
        env = make_env(tmp, vhost, database_url, **extra)
        running = Running(env=env, users=add_users(env, users or {}), replicas=dict(replicas or {}))
        storages = running.replicas.get("storage", 1)
        if storages > 1:
            # The proxy takes STORAGE_URL's port; each storage instance binds one of its own behind it.
            running.addresses = {instance_name("storage", i): free_address() for i in range(storages)}
            running.storage_proxy = TcpProxy(env.env["STORAGE_URL"].split("//", 1)[1],
                                             list(running.addresses.values()), env.var_dir / "storage-proxy")
            running.storage_proxy.start()
        yield running
    finally:
        for stack in running.stacks if running else ():
            stack.stop_all()
        if running is not None and running.storage_proxy is not None:
            running.storage_proxy.stop()
        delete_vhost(vhost)


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
