"""Secrets at rest: values encrypted in the database with keys from the environment (Fernet: AES-128-CBC + HMAC).

``SECRETS_ENCRYPTION_KEYS`` is a comma-separated list, newest first. Each entry is a Fernet key
(``Fernet.generate_key()``) or any passphrase of at least 32 bytes (a key is derived from it). Values are encrypted
with the first key and decrypted with whichever key fits, so rotating is: put a new key first, keep the old ones,
re-encrypt (the storage service does it at start-up, or ``python -m tools.cli reseal-secrets``), then drop the old
ones. Unset, the key is derived from ``SECRET_KEY`` (label ``secrets-at-rest/v1``), exactly as a passphrase entry
would be: to rotate ``SECRET_KEY``, set ``SECRETS_ENCRYPTION_KEYS=<new SECRET_KEY>,<old SECRET_KEY>`` until the rows
were re-encrypted.

Stored form: ``enc:v1:<Fernet token>``. A value without that prefix is a row written before encryption existed; it is
read as plain text and encrypted on the next write (``reseal``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, Text
from sqlalchemy.types import TypeDecorator

from shared.signing import derive_key

PREFIX = "enc:v1:"
KEYS_VAR = "SECRETS_ENCRYPTION_KEYS"
MIN_PASSPHRASE_BYTES = 32
# A config key whose name contains one of these holds a secret (services/storage/records/config.is_secret agrees).
SECRET_NAME_WORDS = ("secret", "password", "token", "credential", "private")


class SecretsKeyError(RuntimeError):
    """The configured keys cannot decrypt a stored secret, or a configured key is unusable."""


def _fernet_key(entry: str) -> bytes:
    try:
        if len(base64.urlsafe_b64decode(entry.encode())) == 32:
            return entry.encode()
    except (binascii.Error, ValueError):
        pass
    if len(entry.encode()) < MIN_PASSPHRASE_BYTES:
        raise SecretsKeyError(f"{KEYS_VAR}: each entry must be a Fernet key or at least {MIN_PASSPHRASE_BYTES} bytes")
    return _derived(entry)


def _derived(passphrase: str) -> bytes:
    return base64.urlsafe_b64encode(derive_key(passphrase, "secrets-at-rest/v1"))


def keys_from_env(environ: Mapping[str, str] | None = None) -> list[bytes]:
    from shared.config import DEV_SECRET_KEY

    environ = os.environ if environ is None else environ
    entries = [e.strip() for e in environ.get(KEYS_VAR, "").split(",") if e.strip()]
    if not entries:  # SECRET_KEY's strength is checked where services start (shared.config.check_service_secrets)
        return [_derived(environ.get("SECRET_KEY") or DEV_SECRET_KEY)]
    return [_fernet_key(e) for e in entries]


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretsKeyError("no encryption key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption: plain until resealed
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretsKeyError(f"a stored secret cannot be decrypted with {KEYS_VAR}: add the key it was "
                                  "written with (keys are listed newest first)") from None


@lru_cache(maxsize=4)
def _box(keys_value: str, secret_key: str) -> SecretBox:
    return SecretBox(keys_from_env({KEYS_VAR: keys_value, "SECRET_KEY": secret_key}))


def current_box() -> SecretBox:
    """The box for the current environment (rebuilt when the variables change, e.g. between tests)."""
    return _box(os.environ.get(KEYS_VAR, ""), os.environ.get("SECRET_KEY", ""))


def is_secret_name(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_NAME_WORDS)


class EncryptedText(TypeDecorator):
    """Text encrypted in the database, plain in Python."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else current_box().seal(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else current_box().open(value)


class SecretsJSON(TypeDecorator):
    """A JSON object whose secret-named values (``is_secret_name``) are encrypted; the other values stay readable
    in the database (bucket, endpoint...)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return value
        box = current_box()
        return {k: box.seal(json.dumps(v)) if is_secret_name(k) and v is not None else v for k, v in value.items()}

    def process_result_value(self, value: dict[str, Any] | None, dialect: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return value
        box = current_box()
        out = {}
        for k, v in value.items():
            if isinstance(v, str) and v.startswith(PREFIX):
                v = json.loads(box.open(v))
            out[k] = v
        return out
