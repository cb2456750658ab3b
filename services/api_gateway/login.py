"""``POST /v1/auth/login``: credentials, and a limit on failed attempts per account and per client address.

The counters live in the database (``login_throttle``), so every gateway instance sees the same ones. A window opens
at an account's (or address's) first failure and lasts ``LOGIN_FAILURE_WINDOW`` seconds; once it holds the maximum
number of failures, logins for that account (or from that address) get ``429`` with ``Retry-After`` until it ends,
even with the right password. A successful login clears its account's counter, not its address's. The check comes
before the password is verified, so concurrent attempts may overshoot the limit by the number in flight.

An unknown email costs the same password-hash work as a wrong password (``shared.passwords.verify_unknown_user``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from services.api_gateway import auth
from services.api_gateway.context import Gateway
from shared import passwords
from shared.http import ApiError, json_response
from shared.models.base import utcnow
from shared.models.events import User
from shared.models.gateway import LoginThrottle

# Made now, at gateway start: made on the first unknown email, it would make that one answer slower than the rest.
passwords.prepare_dummy_hash()


@dataclass(frozen=True)
class Limits:
    per_account: int  # failures per window before an account is locked (0: no limit)
    per_address: int  # failures per window before an address is locked (0: no limit)
    window: int  # seconds


def _key(scope: str, subject: str) -> str:
    return f"{scope}:{hashlib.sha256(subject.encode()).hexdigest()}"


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the peer's, or when the peer is a trusted proxy, the last address in X-Forwarded-For
    that is not one of ours (earlier entries are whatever the client chose to send)."""
    peer = remote_addr or "unknown"
    if not forwarded_for or not _is_trusted(peer, trusted_proxies):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, trusted_proxies):
            return hop
    return peer


def _is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted)


def _retry_after(session: Session, limits: dict[str, int], window: int, now: datetime) -> int | None:
    """Seconds until the latest lock among ``limits`` (key -> max failures) ends, or None if none is locked."""
    opened_after = now - timedelta(seconds=window)
    rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(list(limits)),
                                                       LoginThrottle.window_start > opened_after))
    waits = [(row.window_start + timedelta(seconds=window) - now).total_seconds()
             for row in rows if limits[row.key] and row.failures >= limits[row.key]]
    return max(1, math.ceil(max(waits))) if waits else None


def _record_failure(session: Session, keys: list[str], window: int, now: datetime) -> None:
    # One atomic upsert per key: concurrent gateways add up instead of overwriting each other; a window that ended
    # starts over at this failure.
    table = LoginThrottle.__table__
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    ended = table.c.window_start <= now - timedelta(seconds=window)
    for key in keys:
        stmt = insert(table).values(key=key, failures=1, window_start=now)
        session.execute(stmt.on_conflict_do_update(index_elements=[table.c.key], set_={
            "failures": case((ended, 1), else_=table.c.failures + 1),
            "window_start": case((ended, now), else_=table.c.window_start),
        }))
    # Forget windows that ended long ago, so the table stays as small as the recent failures.
    session.execute(delete(LoginThrottle).where(LoginThrottle.window_start < now - timedelta(seconds=2 * window)))


def log_in(session: Session, email: str, password: str, address: str, limits: Limits, token_key: bytes,
           ttl: int) -> str:
    """An access token for valid credentials; ApiError 429 while the account or address is locked, 401 otherwise.
    Commits the session (failures are recorded even though the request fails)."""
    email = email.strip().lower()
    account, client = _key("account", email), _key("address", address)
    now = utcnow()
    wait = _retry_after(session, {account: limits.per_account, client: limits.per_address}, limits.window, now)
    if wait is not None:
        raise ApiError(429, "too_many_attempts",
                       f"Too many failed logins for this account or from this address; try again in {wait} s.",
                       headers={"Retry-After": str(wait)})
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        ok = passwords.verify_unknown_user(password)
    else:
        ok = passwords.verify_password(user.password_hash, password)
    if not ok or user is None:
        keys = [k for k, limit in ((account, limits.per_account), (client, limits.per_address)) if limit]
        _record_failure(session, keys, limits.window, now)
        session.commit()
        raise ApiError(401, "invalid_credentials", "Wrong email or password.")
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == account))
    session.commit()
    return auth.issue_token(user, token_key, ttl)


def login_route(gw: Gateway, request: Request, email: str, password: str) -> Response:
    """``{"access_token"}`` for valid credentials, counted per account and per client address."""
    cfg = gw.config
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), cfg.trusted_proxies)
    limits = Limits(cfg.login_max_failures_per_account, cfg.login_max_failures_per_address, cfg.login_failure_window)
    with gw.db() as session:
        token = log_in(session, email, password, address, limits, cfg.token_key, cfg.jwt_ttl)
    return json_response({"access_token": token})
