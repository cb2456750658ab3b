"""A fake of the Seafile Web API (api2 + the file server's upload/download URLs), from Seafile's public API docs.

Implemented: token auth (``Authorization: Token ...``) on ``/api2``; ``GET /api2/auth/ping/``;
``GET /api2/repos/<repo>/upload-link/?p=<dir>`` (a JSON string URL, valid one hour);
``POST <upload link>[?ret-json=1]`` with multipart fields ``file``, ``parent_dir``, ``relative_path`` (missing folders
are created) and ``replace`` (else a second file gets a " (1)" name), streamed to disk (chunked request bodies too);
``GET /api2/repos/<repo>/file/detail/?p=<path>``; ``GET /api2/repos/<repo>/file/?p=<path>[&reuse=1]`` (a JSON string
download URL, bound to the file version of that moment, good for one use unless ``reuse=1``) and
``GET <download link>`` with a single ``Range``;
``DELETE /api2/repos/<repo>/file/?p=<path>``. Paths are case-sensitive. File ids are 40 hex digits that change with
the content (sha1 of the bytes here). Errors: 401 ``{"detail"}`` for a bad token, 404 ``{"error_msg"}``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support.fakes._http import BadRequest, Handler, common_arguments, make_server, serve_forever

LINK_TTL = 3600


@dataclass
class Entry:
    id: str
    size: int
    blob: Path
    mtime: int


class _Stream:
    """A byte buffer over an iterator of chunks, for a streaming multipart parser with bounded memory."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.buf = bytearray()

    def fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self.buf += chunk
                return True
        return False

    def drain(self) -> None:
        """Read (and drop) the rest, through the same iterator: a second one would start mid-chunk."""
        for _ in self._chunks:
            pass
        self.buf.clear()

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise BadRequest("truncated multipart body")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def until(self, marker: bytes, sink: Callable[[bytes], None] | None = None, limit: int = 65536) -> bytes:
        """Everything before ``marker`` (consumed); streamed to ``sink`` if given, else returned (at most ``limit``)."""
        searched = 0
        while True:
            index = self.buf.find(marker, max(0, searched - len(marker)))
            if index >= 0:
                data = bytes(self.buf[:index])
                del self.buf[: index + len(marker)]
                if sink is not None:
                    sink(data)
                    return b""
                return data
            searched = len(self.buf)
            if sink is not None and len(self.buf) > len(marker):
                cut = len(self.buf) - len(marker)
                sink(bytes(self.buf[:cut]))
                del self.buf[:cut]
                searched = len(self.buf)
            elif sink is None and len(self.buf) > limit:
                raise BadRequest("multipart field too large")
            if not self.fill():
                raise BadRequest("truncated multipart body")


_DISPOSITION_PARAM = re.compile(r';\s*([a-zA-Z*]+)="((?:[^"\\]|\\.)*)"')


class State:
    def __init__(self, data_dir: Path, token: str, repo_id: str) -> None:
        self.lock = threading.Lock()
        self.token, self.repo_id = token, repo_id
        self.blobs = data_dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Entry] = {}
        self.dirs: set[str] = {"/"}
        self.upload_links: dict[str, float] = {}
        self.download_links: dict[str, tuple[Entry, str, float, bool]] = {}


def normalize(path: str | None) -> str:
    if not path:
        raise BadRequest("p is required")
    path = "/" + "/".join(p for p in path.split("/") if p)
    if any(p in (".", "..") for p in path.split("/")):
        raise BadRequest("invalid path")
    return path


class SeafileHandler(Handler):
    server_version = "FakeSeafile/1"
    state: State

    # -- plumbing ----------------------------------------------------------------------------------------------------

    def route(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}

    def error(self, status: int, message: str) -> None:
        self.send_json(status, {"error_msg": message})

    def api_auth(self) -> bool:
        if self.headers.get("Authorization") != f"Token {self.state.token}":
            self.send_json(401, {"detail": "Invalid token"})
            return False
        return True

    def repo_path(self, path: str, suffix: str) -> bool:
        match = re.fullmatch(r"/api2/repos/([^/]+)/" + re.escape(suffix), path)
        if not match:
            return False
        if match.group(1) != self.state.repo_id:
            self.error(404, "Library not found.")
            raise _Handled()
        return True

    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def dispatch(self, method: str) -> None:
        path, query = self.route()
        try:
            if path.startswith("/seafhttp/"):
                return getattr(self, f"fileserver_{method}")(path, query)
            if not self.api_auth():
                return
            getattr(self, f"api_{method}")(path, query)
        except _Handled:
            pass
        except BadRequest as exc:
            self.error(400, str(exc))

    def do_GET(self) -> None:  # noqa: N802
        self.dispatch("get")

    def do_HEAD(self) -> None:  # noqa: N802
        self.dispatch("get")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("post")

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch("delete")

    # -- api2 --------------------------------------------------------------------------------------------------------

    def api_get(self, path: str, query: dict[str, str]) -> None:
        s = self.state
        if path == "/api2/auth/ping/":
            return self.send_json(200, "pong")
        if self.repo_path(path, "upload-link/"):
            directory = normalize(query.get("p", "/"))
            with s.lock:
                if directory not in s.dirs:
                    return self.error(404, "Folder not found.")
                token = str(uuid.uuid4())
                s.upload_links[token] = time.time() + LINK_TTL
            return self.send_json(200, f"{self.base_url()}/seafhttp/upload-api/{token}")
        if self.repo_path(path, "file/detail/"):
            target = normalize(query.get("p"))
            with s.lock:
                entry = s.files.get(target)
            if entry is None:
                return self.error(404, "File not found")
            return self.send_json(
                200,
                {
                    "id": entry.id,
                    "type": "file",
                    "name": target.rsplit("/", 1)[-1],
                    "size": entry.size,
                    "mtime": entry.mtime,
                    "permission": "rw",
                },
            )
        if self.repo_path(path, "file/"):
            target = normalize(query.get("p"))
            with s.lock:
                entry = s.files.get(target)
                if entry is None:
                    return self.error(404, "File not found")
                token = secrets.token_hex(16)
                name = target.rsplit("/", 1)[-1]
                s.download_links[token] = (entry, name, time.time() + LINK_TTL, query.get("reuse") == "1")
            return self.send_json(200, f"{self.base_url()}/seafhttp/files/{token}/{quote(name)}")
        self.error(404, "Not found")

    def api_delete(self, path: str, query: dict[str, str]) -> None:
        if self.repo_path(path, "file/"):
            target = normalize(query.get("p"))
            with self.state.lock:
                self.state.files.pop(target, None)  # deleting a missing file is not an error
            return self.send_json(200, "success")
        self.error(404, "Not found")

    def api_post(self, path: str, query: dict[str, str]) -> None:
        self.read_body()
        self.error(404, "Not found")

    # -- file server -------------------------------------------------------------------------------------------------

    def fileserver_get(self, path: str, query: dict[str, str]) -> None:
        match = re.fullmatch(r"/seafhttp/files/([0-9a-f]+)/(.+)", path)
        with self.state.lock:
            link = self.state.download_links.get(match.group(1)) if match else None
            if link is not None and not link[3]:
                del self.state.download_links[match.group(1)]  # one use only, unless asked with reuse=1
        if link is None or link[2] < time.time() or link[1] != match.group(2):
            return self.send_text(404, "Bad access token")
        entry = link[0]
        self.send_file_range(entry.blob, entry.size, {}, "application/octet-stream")

    def fileserver_delete(self, path: str, query: dict[str, str]) -> None:
        self.send_text(405, "Method not allowed")

    def fileserver_post(self, path: str, query: dict[str, str]) -> None:
        s = self.state
        match = re.fullmatch(r"/seafhttp/upload-api/([0-9a-f-]+)", path)
        with s.lock:
            expiry = s.upload_links.get(match.group(1)) if match else None
        if expiry is None or expiry < time.time():
            self.read_body(limit=1 << 62)
            return self.send_text(403, "Access denied")
        ctype = self.headers.get("Content-Type", "")
        boundary_match = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.startswith("multipart/form-data") or not boundary_match:
            raise BadRequest("multipart/form-data expected")
        fields, upload = self.parse_form(boundary_match.group(1).encode())
        try:
            if upload is None:
                raise BadRequest("No file")
            filename, tmp, size, digest = upload
            parent = normalize(fields.get("parent_dir"))
            relative = fields.get("relative_path", "").strip("/")
            if "/" in filename or filename in ("", ".", ".."):
                return self.send_text(440, "Invalid filename")
            with s.lock:
                if parent not in s.dirs:
                    raise BadRequest("Parent dir doesn't exist.")
                directory = normalize(f"{parent}/{relative}") if relative else parent
                # Create missing folders; a file in the way is an error.
                walk = ""
                for segment in directory.strip("/").split("/") if directory != "/" else []:
                    walk += "/" + segment
                    if walk in s.files:
                        raise BadRequest(f"{walk} is a file")
                    s.dirs.add(walk)
                target = directory.rstrip("/") + "/" + filename
                if target in s.dirs:
                    raise BadRequest(f"{target} is a folder")
                if target in s.files and fields.get("replace") != "1":
                    stem, dot, ext = filename.rpartition(".")
                    n = 1
                    while target in s.files:
                        name = f"{stem} ({n}).{ext}" if dot and stem else f"{filename} ({n})"
                        target = directory.rstrip("/") + "/" + name
                        n += 1
                blob = s.blobs / uuid.uuid4().hex
                tmp.rename(blob)
                entry = Entry(id=digest, size=size, blob=blob, mtime=int(time.time()))
                s.files[target] = entry
        finally:
            if upload is not None:
                upload[1].unlink(missing_ok=True)
        name = target.rsplit("/", 1)[-1]
        if query.get("ret-json") == "1":
            return self.send_json(200, [{"name": name, "id": entry.id, "size": entry.size}])
        self.send_text(200, entry.id)

    def parse_form(self, boundary: bytes) -> tuple[dict[str, str], tuple[str, Path, int, str] | None]:
        """Fields and the file part (name, temp path, size, sha1) of a streamed multipart/form-data body."""
        stream = _Stream(self.body_chunks())
        delimiter = b"--" + boundary
        fields: dict[str, str] = {}
        upload: tuple[str, Path, int, str] | None = None
        try:
            stream.until(delimiter)
            while True:
                if stream.take(2) == b"--":
                    stream.drain()  # the epilogue
                    break
                headers = stream.until(b"\r\n\r\n").decode("utf-8", "replace")
                disposition = next(
                    (line for line in headers.split("\r\n") if line.lower().startswith("content-disposition:")), ""
                )
                params = {k.lower(): v for k, v in _DISPOSITION_PARAM.findall(disposition)}
                if "filename" in params and params.get("name") == "file":
                    if upload is not None:
                        raise BadRequest("one file per upload")
                    tmp, size, digest = self.receive_file(stream, b"\r\n" + delimiter)
                    upload = (params["filename"], tmp, size, digest)
                else:
                    fields[params.get("name", "")] = stream.until(b"\r\n" + delimiter).decode()
        except BaseException:
            if upload is not None:
                upload[1].unlink(missing_ok=True)
            raise
        return fields, upload

    def receive_file(self, stream: _Stream, marker: bytes) -> tuple[Path, int, str]:
        """Stream a file part to a temporary file; returns (path, size, sha1 hex)."""
        tmp = self.state.blobs / ("upload-" + uuid.uuid4().hex)
        hasher = hashlib.sha1()  # noqa: S324 - an id, like Seafile's object ids, not security
        size = 0
        try:
            with open(tmp, "wb") as f:

                def sink(data: bytes) -> None:
                    nonlocal size
                    size += len(data)
                    hasher.update(data)
                    f.write(data)

                stream.until(marker, sink=sink)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, size, hasher.hexdigest()


class _Handled(Exception):
    """The response was sent already."""


def main() -> None:
    parser = common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--token", required=True)
    parser.add_argument("--repo-id", required=True)
    args = parser.parse_args()
    SeafileHandler.state = State(Path(args.data_dir), args.token, args.repo_id)
    server = make_server(args.host, args.port, SeafileHandler)
    serve_forever([server], args.port_file, server.server_address[1])


if __name__ == "__main__":
    main()
