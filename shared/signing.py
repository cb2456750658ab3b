"""HMAC-SHA256 signed, expiring URLs for the storage data plane.

A link carries ``?expires=<unix seconds>[&filename=<name>][&<extra>=<value>...]&signature=<64 hex>``. The signature
covers the HTTP method, the object key, the expiry, the download filename and the extra parameters the verifier names
(the storage backend an upload goes to, ...), so none of them can be changed, added or dropped without invalidating it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from urllib.parse import urlencode

_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")
# HEAD is a GET without a body: one signature serves both.
_METHOD_ALIASES = {"HEAD": "GET"}


class SignatureError(Exception):
    """Base class: the link must not be honoured."""


class BadSignature(SignatureError):
    """The link was tampered with, truncated or is not one of ours."""


class LinkExpired(SignatureError):
    """The link is genuine but its lifetime is over."""


def _method(method: str) -> str:
    method = method.upper()
    return _METHOD_ALIASES.get(method, method)


def derive_key(secret: str | bytes, label: str) -> bytes:
    """A 32-byte key for one purpose (``label``), derived from a root secret (HMAC-SHA256 as a PRF, as in HKDF's
    expand step). Keys for different labels are independent: knowing one tells nothing about the root or the others."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("an empty secret cannot derive keys")
    return hmac.new(raw, b"portability/key/" + label.encode(), hashlib.sha256).digest()


def _subkey(secret: str | bytes) -> bytes:
    # Domain separation: whatever key is passed (the settings' link key), a URL signature is never valid elsewhere.
    raw = secret.encode() if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("an empty secret cannot sign URLs")
    return hmac.new(raw, b"portability/signed-url/v1", hashlib.sha256).digest()


def sign(secret: str | bytes, method: str, key: str, expires: int, filename: str | None = None,
         extra: Mapping[str, str] | None = None) -> str:
    """Return the hex HMAC-SHA256 over (method, key, expires, filename[, extra parameters])."""
    # JSON of a list is an unambiguous encoding: no separator inside a key or filename can shift field boundaries.
    fields: list = ["v1", _method(method), key, int(expires), filename]
    if extra:  # links without extra parameters keep the signature they always had
        fields.append(sorted(extra.items()))
    message = json.dumps(fields, separators=(",", ":"))
    return hmac.new(_subkey(secret), message.encode(), hashlib.sha256).hexdigest()


def verify(
    secret: str | bytes,
    method: str,
    key: str,
    expires: int | str | None,
    filename: str | None,
    signature: str | None,
    now: float | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Raise ``BadSignature`` or ``LinkExpired`` unless the signature is valid and unexpired.

    The signature is checked before the expiry so that "expired" is only ever said of a genuine link.
    """
    if not isinstance(signature, str) or not _SIGNATURE_RE.fullmatch(signature.lower()):
        raise BadSignature("missing or malformed signature")
    if isinstance(expires, str):
        if not _EXPIRES_RE.fullmatch(expires):
            raise BadSignature("missing or malformed expiry")
        expires = int(expires)
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        raise BadSignature("missing or malformed expiry")
    expected = sign(secret, method, key, expires, filename, extra)
    if not hmac.compare_digest(expected, signature.lower()):
        raise BadSignature("signature does not match")
    if (time.time() if now is None else now) >= expires:
        raise LinkExpired("link expired")


def signed_query(secret: str | bytes, method: str, key: str, expires: int, filename: str | None = None,
                 extra: Mapping[str, str] | None = None) -> str:
    """The query string (without ``?``) of a signed link."""
    params: dict[str, str] = {"expires": str(int(expires))}
    if filename is not None:
        params["filename"] = filename
    params.update(extra or {})
    params["signature"] = sign(secret, method, key, expires, filename, extra)
    return urlencode(params)


def verify_query(secret: str | bytes, method: str, key: str, args: Mapping[str, str], now: float | None = None,
                 extra_names: tuple[str, ...] = ()) -> None:
    """``verify`` with the parameters taken from a parsed query string (e.g. Werkzeug's ``request.args``).

    ``extra_names``: the extra parameters the link may carry; those present are part of what the signature covers.
    """
    extra = {name: args[name] for name in extra_names if args.get(name) is not None}
    verify(secret, method, key, args.get("expires"), args.get("filename"), args.get("signature"), now=now,
           extra=extra)
