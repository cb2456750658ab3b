"""Bytes in and out: a multipart upload streamed from disk, and a download that resumes into ``FILE.part``.

Uploads are sent as one ``multipart/form-data`` body whose length is known in advance (so the server can refuse an
oversized file before it arrives), produced chunk by chunk from the file: the file is never read whole. The server
has no resumable uploads: an interrupted upload starts again from zero.

Downloads write to ``FILE.part`` and rename it to ``FILE`` once the bytes match the expected sha256. A ``.part``
left by an interrupted run is continued with ``Range: bytes=N-`` and ``If-Range: "<sha256>"`` (the storage data
plane's ETag is the object's sha256), so a changed object is sent whole instead of being spliced.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from eventport.errors import FAILED, CliError

CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED = re.compile(r"^bytes \*/(\d+)$")


def _quote(name: str) -> str:
    # As browsers write a multipart file name: quotes and line breaks percent-encoded, everything else as UTF-8.
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartFile:
    """A ``multipart/form-data`` body holding one file field, read from disk as it is sent.

    ``len()`` is the exact body length (requests sends it as ``Content-Length``); iterating yields the body.
    ``on_chunk(n)`` is called with the size of each piece of the file sent (for a progress bar).
    """

    def __init__(self, path: Path, field: str = "file", filename: str | None = None,
                 content_type: str = "application/octet-stream", on_chunk: Callable[[int], None] | None = None,
                 chunk_size: int = CHUNK) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.boundary = "eventport-" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.on_chunk = on_chunk
        self.chunk_size = chunk_size
        self.head = (f"--{self.boundary}\r\n"
                     f'Content-Disposition: form-data; name="{_quote(field)}"; '
                     f'filename="{_quote(filename or path.name)}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        left = self.size
        with open(self.path, "rb") as f:
            while left > 0:
                chunk = f.read(min(self.chunk_size, left))
                if not chunk:
                    raise CliError(f"{self.path} shrank while it was being sent", FAILED, "file_changed")
                left -= len(chunk)
                if self.on_chunk:
                    self.on_chunk(len(chunk))
                yield chunk
        yield self.tail


class RateLimit:
    """At most ``rate`` bytes per second on average (``None``: no limit), by sleeping between chunks."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    def took(self, size: int) -> None:
        if not self.rate:
            return
        self.sent += size
        ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def resume_plan(status: int, headers: dict[str, str] | requests.structures.CaseInsensitiveDict, asked_from: int
                ) -> tuple[str, int | None]:
    """How to treat a download answer to ``Range: bytes=<asked_from>-`` (0: no Range sent).

    ``("append", total)``: the answer continues the ``.part``; ``("restart", total)``: it is the whole object,
    write it from zero; ``("complete", total)``: 416 and the ``.part`` already holds all ``total`` bytes;
    ``("retry", None)``: 416 for a ``.part`` that is not the object (longer than it): start over without Range.
    """
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != asked_from:
            raise CliError("the server answered a range that was not asked for", FAILED, "bad_range")
        total = match.group(3)
        return "append", None if total == "*" else int(total)
    if status == 200:
        length = headers.get("Content-Length")
        return "restart", int(length) if length and length.isdigit() else None
    if status == 416 and asked_from:
        match = _UNSATISFIED.match(headers.get("Content-Range", ""))
        if match and int(match.group(1)) == asked_from:
            return "complete", asked_from
        return "retry", None
    raise ValueError(f"status {status} is not a download answer")


def _file_digest(path: Path, limit: int) -> Any:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = limit
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            digest.update(chunk)
    return digest


ProgressFactory = Callable[[int | None, int], Any]  # (total, already there) -> context manager of a ByteBar


def download(get: Callable[[dict[str, str]], requests.Response], dest: Path, *, sha256: str | None,
             bar: ProgressFactory, rate: int | None = None) -> dict[str, Any]:
    """Download to ``dest`` through ``dest.part``, resuming a ``.part`` that is there; checks ``sha256`` if known.

    ``get(headers)`` makes the GET (following redirects, streaming) and returns a response with status 200, 206 or
    416; anything else it raises as ``CliError``. Returns ``{"file", "size", "sha256", "resumed_from"}``.
    """
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    for _ in range(2):  # a second round only after a 416 for a .part that is not the object's prefix
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            if sha256:
                headers["If-Range"] = f'"{sha256}"'
        response = get(headers)
        with response:
            action, total = resume_plan(response.status_code, response.headers, have)
            if action == "retry":
                part.unlink()
                have = 0
                continue
            if action == "restart":
                have = 0
            resumed_from = have
            digest = _file_digest(part, have) if have else hashlib.sha256()
            if action != "complete":
                limit = RateLimit(rate)
                size = min(CHUNK, max(1024, rate // 10)) if rate else CHUNK  # ~10 pieces a second when limited
                with open(part, "ab" if have else "wb") as f, bar(total, have) as progress:
                    for chunk in response.iter_content(size):
                        f.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        progress.advance(len(chunk))
                        limit.took(len(chunk))
        if total is not None and have != total:
            raise CliError(f"the download ended after {have} of {total} bytes; run the command again to resume",
                           FAILED, "incomplete_download")
        found = digest.hexdigest()
        if sha256 and found != sha256:
            part.unlink()
            raise CliError(f"the downloaded bytes do not match sha256 {sha256} (got {found}); the partial file was "
                           "removed, run the command again", FAILED, "checksum_mismatch")
        os.replace(part, dest)
        return {"file": str(dest), "size": have, "sha256": found, "resumed_from": resumed_from}
    raise CliError("the server refused every range of the download", FAILED, "bad_range")
