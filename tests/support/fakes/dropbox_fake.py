"""A fake of the Dropbox API v2 (the routes the storage backend uses), over HTTPS, from Dropbox's public HTTP docs.

Two listeners, as Dropbox has two hosts: the "api" one (RPC routes, JSON bodies, and ``/oauth2/token``) and the
"content" one (upload/download routes: argument in the ``Dropbox-API-Arg`` header, bytes in the body, result in the
``Dropbox-API-Result`` header for downloads). A route called on the wrong host answers 404, so a client that mixes
the hosts up fails here as it would against Dropbox.

Implemented: refresh-token grant; ``files/upload``; ``files/upload_session/start``, ``append_v2``, ``finish``
(offsets checked, ``incorrect_offset`` with ``correct_offset``); ``files/download`` with a single ``Range``;
``files/get_metadata``; ``files/delete_v2``. Paths are case-insensitive and case-preserving; parents are created
implicitly; a file cannot sit where a folder is (or under a file). ``content_hash`` arguments are verified with
Dropbox's block hash. Route errors are 409 with ``error_summary`` and a tagged ``error``; bad tokens 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.support.fakes._http import BadRequest, Handler, common_arguments, make_server, serve_forever

BLOCK = 4 * 1024 * 1024  # Dropbox's content_hash block size
MAX_REQUEST_BYTES = 150 * 1024 * 1024  # one upload call may carry at most 150 MiB
TOKEN_TTL = 4 * 3600


class DropboxContentHasher:
    """Dropbox's content_hash: sha256 over the concatenated sha256 of every 4 MiB block."""

    def __init__(self) -> None:
        self._overall = hashlib.sha256()
        self._block = hashlib.sha256()
        self._in_block = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(BLOCK - self._in_block, len(view))
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == BLOCK:
                self._overall.update(self._block.digest())
                self._block = hashlib.sha256()
                self._in_block = 0

    def hexdigest(self) -> str:
        overall = self._overall.copy()
        if self._in_block:
            overall.update(self._block.digest())
        return overall.hexdigest()


@dataclass
class Entry:
    path_display: str
    id: str
    rev: str
    size: int
    content_hash: str
    blob: Path
    modified: str

    def metadata(self, tag: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.path_display.rsplit("/", 1)[-1],
            "path_lower": self.path_display.lower(),
            "path_display": self.path_display,
            "id": self.id,
            "client_modified": self.modified,
            "server_modified": self.modified,
            "rev": self.rev,
            "size": self.size,
            "is_downloadable": True,
            "content_hash": self.content_hash,
        }
        return {".tag": "file", **meta} if tag else meta


@dataclass
class Session:
    path: Path
    offset: int = 0
    closed: bool = False


class RouteError(Exception):
    """A 409 route error: ``summary`` as Dropbox spells ``error_summary``, ``error`` the tagged union."""

    def __init__(self, summary: str, error: dict[str, Any]) -> None:
        super().__init__(summary)
        self.summary = summary
        self.error = error


class AuthFailure(Exception):
    pass


def not_found(tag: str) -> RouteError:
    return RouteError(f"{tag}/not_found/", {".tag": tag, tag: {".tag": "not_found"}})


class State:
    def __init__(self, data_dir: Path, app_key: str, app_secret: str, refresh_token: str) -> None:
        self.lock = threading.Lock()
        self.blobs = data_dir / "blobs"
        self.sessions_dir = data_dir / "sessions"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        self.app_key, self.app_secret, self.refresh_token = app_key, app_secret, refresh_token
        self.tokens: dict[str, float] = {}
        self.files: dict[str, Entry] = {}  # by lower-cased path
        self.sessions: dict[str, Session] = {}
        self.rev_counter = 0x1000000000

    def next_rev(self) -> str:
        self.rev_counter += 1
        return f"{self.rev_counter:x}"  # revs are hex strings of at least 9 digits

    def check_path(self, path: Any) -> str:
        if not isinstance(path, str) or not path.startswith("/") or path.endswith("/") or "//" in path:
            raise BadRequest(f"path: {path!r} is not a valid Dropbox path")
        return path

    def commit(self, path: str, source: Path, size: int, content_hash: str, mode: Any) -> Entry:
        """Place ``source`` at ``path`` (called with the lock held)."""
        lower = path.lower()
        parts = lower.split("/")
        for i in range(2, len(parts)):
            if "/".join(parts[:i]) in self.files:
                raise RouteError("path/conflict/file_ancestor/", _write_conflict("file_ancestor"))
        if any(p.startswith(lower + "/") for p in self.files):
            raise RouteError("path/conflict/folder/", _write_conflict("folder"))
        tag = mode.get(".tag") if isinstance(mode, dict) else (mode or "add")
        existing = self.files.get(lower)
        if existing is not None:
            if tag == "add" and existing.content_hash != content_hash:
                raise RouteError("path/conflict/file/", _write_conflict("file"))
            if tag == "update" and mode.get("update") != existing.rev:
                raise RouteError("path/conflict/file/", _write_conflict("file"))
        blob = self.blobs / uuid.uuid4().hex
        shutil.move(source, blob)
        entry = Entry(
            path_display=path,
            id=existing.id if existing else "id:" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="),
            rev=self.next_rev(),
            size=size,
            content_hash=content_hash,
            blob=blob,
            modified=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.files[lower] = entry
        if existing is not None:
            existing.blob.unlink(missing_ok=True)
        return entry


def _write_conflict(kind: str) -> dict[str, Any]:
    return {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": kind}}, "upload_session_id": ""}


class DropboxHandler(Handler):
    server_version = "FakeDropbox/1"
    state: State  # set on the class by main()
    role: str  # "api" or "content", per server (set in main)

    API_ROUTES = ("/2/files/get_metadata", "/2/files/delete_v2")
    CONTENT_ROUTES = (
        "/2/files/upload",
        "/2/files/upload_session/start",
        "/2/files/upload_session/append_v2",
        "/2/files/upload_session/finish",
        "/2/files/download",
    )

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        role = self.server.role  # type: ignore[attr-defined]
        try:
            if path == "/oauth2/token" and role == "api":
                return self.oauth_token()
            if (role == "api" and path in self.API_ROUTES) or (role == "content" and path in self.CONTENT_ROUTES):
                self.authenticate()
                return getattr(self, "route_" + path.removeprefix("/2/files/").replace("/", "_"))()
            self.read_body(limit=MAX_REQUEST_BYTES)
            self.send_text(404, f"Unknown route {path} on the {role} host")
        except RouteError as exc:
            self.send_json(409, {"error_summary": exc.summary, "error": exc.error})
        except AuthFailure:
            self.send_json(401, {"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}})
        except BadRequest as exc:
            self.send_text(400, f"Error in call to API function: {exc}")

    # -- auth --------------------------------------------------------------------------------------------------------

    def oauth_token(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self.read_body().decode()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        s = self.state
        if client_id != s.app_key or client_secret != s.app_secret:
            return self.send_json(400, {"error": "invalid_client", "error_description": "Invalid client_id or secret"})
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != s.refresh_token:
            return self.send_json(400, {"error": "invalid_grant", "error_description": "refresh token is malformed"})
        token = "sl.fake-" + secrets.token_urlsafe(24)
        with s.lock:
            s.tokens[token] = time.time() + TOKEN_TTL
        self.send_json(200, {"access_token": token, "token_type": "bearer", "expires_in": TOKEN_TTL})

    def authenticate(self) -> None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.state.lock:
            expiry = self.state.tokens.get(token)
        if expiry is None or expiry < time.time():
            self.read_body(limit=MAX_REQUEST_BYTES)  # drain, keep the connection usable
            raise AuthFailure()

    # -- arguments ---------------------------------------------------------------------------------------------------

    def header_arg(self) -> dict[str, Any]:
        raw = self.headers.get("Dropbox-API-Arg")
        if raw is None:
            raise BadRequest("missing Dropbox-API-Arg header")
        try:
            return json.loads(raw)
        except ValueError:
            raise BadRequest("Dropbox-API-Arg is not JSON") from None

    def json_arg(self) -> dict[str, Any]:
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise BadRequest("Content-Type must be application/json")
        try:
            return json.loads(self.read_body() or b"null") or {}
        except ValueError:
            raise BadRequest("request body is not JSON") from None

    def receive(self, target: Path, append: bool = False) -> tuple[int, str]:
        """Stream the body to ``target``; returns (bytes received, content_hash of those bytes)."""
        hasher = DropboxContentHasher()
        size = 0
        with open(target, "ab" if append else "wb") as f:
            for chunk in self.body_chunks():
                size += len(chunk)
                if size > MAX_REQUEST_BYTES:
                    raise RouteError("payload_too_large/", {".tag": "payload_too_large"})
                hasher.update(chunk)
                f.write(chunk)
        return size, hasher.hexdigest()

    @staticmethod
    def check_hash(arg: dict[str, Any], actual: str) -> None:
        expected = arg.get("content_hash")
        if expected is not None and expected != actual:
            raise RouteError("content_hash_mismatch/", {".tag": "content_hash_mismatch"})

    # -- routes ------------------------------------------------------------------------------------------------------

    def route_upload(self) -> None:
        arg = self.header_arg()
        s = self.state
        path = s.check_path(arg.get("path"))
        tmp = s.sessions_dir / ("upload-" + uuid.uuid4().hex)
        try:
            size, content_hash = self.receive(tmp)
            self.check_hash(arg, content_hash)
            with s.lock:
                entry = s.commit(path, tmp, size, content_hash, arg.get("mode"))
        finally:
            tmp.unlink(missing_ok=True)
        self.send_json(200, entry.metadata())

    def route_upload_session_start(self) -> None:
        arg = self.header_arg()
        s = self.state
        session_id = "pid_upload_session:" + secrets.token_urlsafe(16)
        session = Session(s.sessions_dir / uuid.uuid4().hex)
        size, content_hash = self.receive(session.path)
        self.check_hash(arg, content_hash)
        session.offset, session.closed = size, bool(arg.get("close"))
        with s.lock:
            s.sessions[session_id] = session
        self.send_json(200, {"session_id": session_id})

    def _session(self, cursor: Any) -> Session:
        if not isinstance(cursor, dict):
            raise BadRequest("cursor is required")
        with self.state.lock:
            session = self.state.sessions.get(cursor.get("session_id"))
        if session is None:
            raise RouteError("not_found/", {".tag": "not_found"})
        if session.closed:
            raise RouteError("closed/", {".tag": "closed"})
        if cursor.get("offset") != session.offset:
            raise RouteError(
                f"incorrect_offset/{session.offset}",
                {".tag": "incorrect_offset", "correct_offset": session.offset},
            )
        return session

    def route_upload_session_append_v2(self) -> None:
        arg = self.header_arg()
        try:
            session = self._session(arg.get("cursor"))
        except RouteError:
            self.read_body(limit=MAX_REQUEST_BYTES)
            raise
        size, content_hash = self.receive(session.path, append=True)
        self.check_hash(arg, content_hash)  # (the bytes stay appended, as the offset moved on Dropbox too)
        session.offset += size
        session.closed = bool(arg.get("close"))
        self.send_body(200, b"null", "application/json")

    def route_upload_session_finish(self) -> None:
        arg = self.header_arg()
        s = self.state
        try:
            session = self._session(arg.get("cursor"))
        except RouteError as exc:
            self.read_body(limit=MAX_REQUEST_BYTES)
            raise RouteError(
                "lookup_failed/" + exc.summary, {".tag": "lookup_failed", "lookup_failed": exc.error}
            ) from None
        commit = arg.get("commit") or {}
        path = s.check_path(commit.get("path"))
        size, content_hash = self.receive(session.path, append=True)
        self.check_hash(arg, content_hash)
        session.offset += size
        hasher = DropboxContentHasher()
        with open(session.path, "rb") as f:
            while data := f.read(BLOCK):
                hasher.update(data)
        with s.lock:
            try:
                entry = s.commit(path, session.path, session.offset, hasher.hexdigest(), commit.get("mode"))
            except RouteError as exc:
                raise RouteError(exc.summary, {".tag": "path", "path": exc.error["reason"]}) from None
            s.sessions = {k: v for k, v in s.sessions.items() if v is not session}
        self.send_json(200, entry.metadata())

    def route_download(self) -> None:
        arg = self.header_arg()
        self.read_body()
        path = self.state.check_path(arg.get("path"))
        with self.state.lock:
            entry = self.state.files.get(path.lower())
        if entry is None:
            raise not_found("path")
        # Only ASCII in a header: json.dumps escapes the rest, as Dropbox does.
        self.send_file_range(
            entry.blob, entry.size, {"Dropbox-API-Result": json.dumps(entry.metadata())}, "application/octet-stream"
        )

    def route_get_metadata(self) -> None:
        arg = self.json_arg()
        path = self.state.check_path(arg.get("path"))
        lower = path.lower()
        with self.state.lock:
            entry = self.state.files.get(lower)
            folder = next((p for p in self.state.files if p.startswith(lower + "/")), None)
        if entry is not None:
            return self.send_json(200, entry.metadata(tag=True))
        if folder is not None:
            name = path.rsplit("/", 1)[-1]
            return self.send_json(
                200, {".tag": "folder", "name": name, "path_lower": lower, "path_display": path, "id": "id:folder"}
            )
        raise not_found("path")

    def route_delete_v2(self) -> None:
        arg = self.json_arg()
        path = self.state.check_path(arg.get("path"))
        lower = path.lower()
        s = self.state
        with s.lock:
            entry = s.files.pop(lower, None)
            if entry is not None:
                entry.blob.unlink(missing_ok=True)
                return self.send_json(200, {"metadata": entry.metadata(tag=True)})
            inside = [p for p in s.files if p.startswith(lower + "/")]
            for p in inside:  # deleting a folder deletes what is in it
                s.files.pop(p).blob.unlink(missing_ok=True)
        if not inside:
            raise not_found("path_lookup")
        self.send_json(
            200,
            {
                "metadata": {
                    ".tag": "folder",
                    "name": path.rsplit("/", 1)[-1],
                    "path_lower": lower,
                    "path_display": path,
                    "id": "id:folder",
                }
            },
        )


def main() -> None:
    parser = common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--content-port", type=int, default=0)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--refresh-token", required=True)
    args = parser.parse_args()
    DropboxHandler.state = State(Path(args.data_dir), args.app_key, args.app_secret, args.refresh_token)
    servers = []
    for role, port in (("api", args.port), ("content", args.content_port)):
        server = make_server(args.host, port, DropboxHandler, tls=(args.cert, args.key))
        server.role = role  # type: ignore[attr-defined]
        servers.append(server)
    ports = {role: s.server_address[1] for role, s in zip(("api", "content"), servers, strict=True)}
    serve_forever(servers, args.port_file, ports)


if __name__ == "__main__":
    main()
