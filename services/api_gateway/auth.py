"""Passwords and access tokens (JWT, HS256)."""

from __future__ import annotations

import time
from typing import Any

import jwt
from werkzeug.security import check_password_hash, generate_password_hash

from shared.http import ApiError

# Open Event clients send "JWT <token>"; everything else speaks "Bearer <token>".
TOKEN_SCHEMES = ("jwt", "bearer")


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def issue_token(user_id: int, secret: str, ttl: int) -> str:
    now = int(time.time())
    return jwt.encode({"sub": str(user_id), "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


def user_id_from_header(header: str | None, secret: str) -> int:
    """The user id carried by an ``Authorization`` header; ApiError(401) when absent or invalid."""
    if not header:
        raise ApiError(401, "unauthorized", "Authentication required: send 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in TOKEN_SCHEMES or not token.strip():
        raise ApiError(401, "unauthorized", "Authorization header must be 'Bearer <token>' or 'JWT <token>'.")
    try:
        claims: dict[str, Any] = jwt.decode(token.strip(), secret, algorithms=["HS256"], options={"require": ["exp"]})
        return int(claims["sub"])
    except jwt.ExpiredSignatureError as exc:
        raise ApiError(401, "token_expired", "The access token has expired; log in again.") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise ApiError(401, "invalid_token", "The access token is not valid.") from exc
