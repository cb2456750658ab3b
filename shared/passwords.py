"""Password hashes: made by the gateway at login, and by tools (``create-user``) and test or bench set-ups."""

from __future__ import annotations

import secrets

from werkzeug.security import check_password_hash, generate_password_hash

_dummy_hash: str | None = None


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def prepare_dummy_hash() -> str:
    """The hash unknown emails are checked against: same method and cost as real ones (made by the same function)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_hex(16))
    return _dummy_hash


def verify_unknown_user(password: str) -> bool:
    """Spend the same work as ``verify_password`` for an email that has no user, so the answer time does not tell
    whether the account exists. Always False."""
    check_password_hash(prepare_dummy_hash(), password)
    return False
