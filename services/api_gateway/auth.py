"""Passwords and access tokens (JWT, HS256).

A token names its user (``sub``) and carries a stamp of the user's password hash (``pws``). The hash gets a new salt
whenever the password is set, so every token issued before a password change stops working; user ids are never
reused (``AUTOINCREMENT``), so a token of a deleted user never becomes another user's. Both are checked on every
request (``current_caller``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from services.api_gateway.rules import Caller
from shared.http import MAX_DB_INT, ApiError
from shared.models.events import User

# Open Event clients send "JWT <token>"; everything else speaks "Bearer <token>".
TOKEN_SCHEMES = ("jwt", "bearer")
# A user id as our tokens write it; anything longer cannot be a row and must not reach the database as an int.
_SUB_RE = re.compile(r"[1-9][0-9]{0,17}")


@functools.lru_cache(maxsize=1024)  # asked on every request; a user's hash changes only with the password
def password_stamp(password_hash: str, key: bytes) -> str:
    """A short keyed digest of the password hash: reveals nothing about it, changes whenever it does."""
    digest = hmac.new(key, b"password-stamp/" + password_hash.encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(user: User, key: bytes, ttl: int) -> str:
    now = int(time.time())
    claims = {"sub": str(user.id), "iat": now, "exp": now + ttl, "pws": password_stamp(user.password_hash, key)}
    return jwt.encode(claims, key, algorithm="HS256")


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    stamp: str


def read_token(header: str | None, key: bytes) -> TokenClaims:
    """The claims of an ``Authorization`` header's token; ApiError(401) when absent, malformed, forged or expired."""
    if not header:
        raise ApiError(401, "unauthorized", "Authentication required: send 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in TOKEN_SCHEMES or not token.strip():
        raise ApiError(401, "unauthorized", "Authorization header must be 'Bearer <token>' or 'JWT <token>'.")
    user_id, stamp, expires = _verified(token.strip(), key)
    if expires <= time.time():  # as PyJWT decides it (no leeway), for a token verified before it expired
        raise ApiError(401, "token_expired", "The access token has expired; log in again.")
    return TokenClaims(user_id, stamp)


# A client polls with one token many times a second: its signature is checked once, then its claims are looked up
# (expiry is still checked on every request, above). Only tokens that verified are kept: forged or malformed ones
# raise, and raising is not cached.
@functools.lru_cache(maxsize=4096)
def _verified(token: str, key: bytes) -> tuple[int, str, float]:
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=["HS256"],
                                            options={"require": ["exp", "sub", "pws"]})
    except jwt.ExpiredSignatureError as exc:
        raise ApiError(401, "token_expired", "The access token has expired; log in again.") from exc
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, "invalid_token", "The access token is not valid.") from exc
    sub, stamp, expires = claims.get("sub"), claims.get("pws"), claims.get("exp")
    if not isinstance(sub, str) or not _SUB_RE.fullmatch(sub) or not isinstance(stamp, str):
        raise ApiError(401, "invalid_token", "The access token is not valid.")
    return int(sub), stamp, float(expires)


USERS = User.__table__
# What a request's caller is read as, labelled so that a route can read it beside its own row in one statement.
CALLER_COLUMNS = (USERS.c.id.label("caller_id"), USERS.c.email.label("caller_email"),
                  USERS.c.is_admin.label("caller_is_admin"), USERS.c.password_hash.label("caller_password_hash"))
CALLER_ID = bindparam("caller_id")  # the parameter such a statement selects the user with
# Built once: a statement object keeps its cache key, where one built per request is keyed again every time.
_CALLER_ROW = select(*CALLER_COLUMNS).where(USERS.c.id == CALLER_ID)


def current_caller(session: Session | Connection, header: str | None, key: bytes) -> Caller:
    """The caller of a request whose ``Authorization`` header is ``header``: a valid token of a user that still
    exists with the password the token was issued under; ApiError(401) otherwise.

    One Core query (every request asks this; the ORM's identity map would only add cost to a single-row read).
    """
    claims = token_user(header, key)
    return caller_of(session.execute(_CALLER_ROW, {"caller_id": claims.user_id}).first(), claims, key)


def token_user(header: str | None, key: bytes) -> TokenClaims:
    """``read_token``, for a user id a row can have: the value of ``CALLER_ID`` in a statement reading the caller."""
    claims = read_token(header, key)
    if not 0 < claims.user_id <= MAX_DB_INT:  # a signed token with a 30-digit sub: no row can have that id
        raise ApiError(401, "invalid_token", "The access token names no valid user.")
    return claims


def caller_of(row: Any, claims: TokenClaims, key: bytes) -> Caller:
    """The caller from a row of ``CALLER_COLUMNS`` (``None`` or a null ``caller_id``: no such user): 401 for a user
    gone or a password changed since the token was issued."""
    if row is None or row.caller_id is None:
        raise ApiError(401, "invalid_token", "The access token belongs to a user that no longer exists.")
    if not hmac.compare_digest(password_stamp(row.caller_password_hash, key), claims.stamp):
        raise ApiError(401, "token_revoked", "The password was changed since this token was issued; log in again.")
    return Caller(id=row.caller_id, email=row.caller_email, is_admin=row.caller_is_admin)
