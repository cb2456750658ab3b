"""Where the CLI keeps its login: one JSON file per user, readable by that user only (mode 0600, folder 0700).

Tokens are kept per server URL, so ``--url`` can switch between a local and a production gateway without logging in
again. ``EVENTPORT_TOKEN`` in the environment wins over the file (for CI jobs, which should not write one).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "credentials.json"
TOKEN_VARIABLE = "EVENTPORT_TOKEN"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/eventport`` when that variable is set to an absolute path, else ``~/.config/eventport``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "eventport"


def normalize_url(url: str) -> str:
    return url.rstrip("/")


class Credentials:
    """The login file: ``{"servers": {"<url>": {"token": ..., "email": ...}}}``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / FILE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"servers": {}}
        except (OSError, ValueError):
            return {"servers": {}}  # an unreadable file is as good as none: `login` rewrites it
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            return {"servers": {}}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written to a 0600 temporary file and renamed over the old one: never readable by others, even briefly,
        # and never half-written.
        fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def get(self, url: str) -> dict[str, Any] | None:
        entry = self._read()["servers"].get(normalize_url(url))
        return entry if isinstance(entry, dict) and isinstance(entry.get("token"), str) else None

    def token(self, url: str, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        if env.get(TOKEN_VARIABLE):
            return env[TOKEN_VARIABLE]
        entry = self.get(url)
        return entry["token"] if entry else None

    def save(self, url: str, token: str, email: str) -> None:
        data = self._read()
        data["servers"][normalize_url(url)] = {"token": token, "email": email}
        self._write(data)

    def remove(self, url: str) -> bool:
        """Forget the login for ``url``; whether there was one. The file goes when no login is left."""
        data = self._read()
        if data["servers"].pop(normalize_url(url), None) is None:
            return False
        if data["servers"]:
            self._write(data)
        else:
            self.path.unlink(missing_ok=True)
        return True
