"""Passwords and access tokens (JWT, HS256).

A token names its user (``sub``) and carries a stamp of the user's password hash (``pws``). The hash gets a new salt
whenever the password is set, so every token issued before a password change stops working; user ids are never
reused (``AUTOINCREMENT``), so a token of a deleted user never becomes another user's. Both are checked on every
request (``authenticate``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy.orm import Session

from services.api_gateway.rules import Caller
from shared.http import MAX_DB_INT, ApiError
from shared.models.events import User

# Open Event clients send "JWT <token>"; everything else speaks "Bearer <token>".
TOKEN_SCHEMES = ("jwt", "bearer")
# A user id as our tokens write it; anything longer cannot be a row and must not reach the database as an int.
_SUB_RE = re.compile(r"[1-9][0-9]{0,17}")


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
    token = token.strip()
    # Clients poll with the same token many times a second: its signature is checked once (the user and password
    # stamp are still checked against the database on every request, by authenticate).
    cached = _VERIFIED.get((token, key))
    if cached is not None and cached[1] > time.time():
        return cached[0]
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=["HS256"],
                                            options={"require": ["exp", "sub", "pws"]})
    except jwt.ExpiredSignatureError as exc:
        raise ApiError(401, "token_expired", "The access token has expired; log in again.") from exc
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, "invalid_token", "The access token is not valid.") from exc
    sub, stamp = claims.get("sub"), claims.get("pws")
    if not isinstance(sub, str) or not _SUB_RE.fullmatch(sub) or not isinstance(stamp, str):
        raise ApiError(401, "invalid_token", "The access token is not valid.")
    verified = TokenClaims(int(sub), stamp)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[token, key] = (verified, float(claims["exp"]))
    return verified


_VERIFIED: dict[tuple[str, bytes], tuple[TokenClaims, float]] = {}  # (token, key) -> (claims, exp)
_VERIFIED_MAX = 4096


def authenticate(session: Session, header: str | None, key: bytes) -> int:
    """The id of the user a valid token belongs to, if that user still exists with the password the token was
    issued under; ApiError(401) otherwise."""
    claims = read_token(header, key)
    user = session.get(User, claims.user_id)
    if user is None:
        raise ApiError(401, "invalid_token", "The access token belongs to a user that no longer exists.")
    if not hmac.compare_digest(password_stamp(user.password_hash, key), claims.stamp):
        raise ApiError(401, "token_revoked", "The password was changed since this token was issued; log in again.")
    return user.id


def current_caller(session: Session, header: str | None, key: bytes) -> Caller:
    """The caller of a request whose ``Authorization`` header is ``header``; ApiError(401) when there is none."""
    user_id = authenticate(session, header, key)
    if not 0 < user_id <= MAX_DB_INT:  # a signed token with a 30-digit sub: no row can have that id
        raise ApiError(401, "invalid_token", "The access token names no valid user.")
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(401, "invalid_token", "The access token belongs to a user that no longer exists.")
    return Caller(id=user.id, email=user.email, is_admin=user.is_admin)
