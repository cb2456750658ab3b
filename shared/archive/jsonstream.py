"""Streaming JSON for archive members: records come out one at a time, with limits on strings, depth and count.

ijson's C backend (yajl) tokenizes; the values are assembled here so that nesting depth and string length are
checked before anything large or deep is built. Values match ``json.load``: the same types (``use_float``), the
same key order, and for a duplicated key the last value wins at the key's first position.

Error codes: ``invalid_json``, ``wrong_top_level_type``, ``string_too_long``, ``too_deep``, ``too_many_records``,
``invalid_text`` (bytes that are not UTF-8, or a lone surrogate such as ``"\\udc00"``, naming record and field)
(and whatever the member reader raises: ``bad_zip``, ``member_too_large``, ``compression_ratio``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson

from shared.archive.safezip import ArchiveError, ArchiveLimits

_BOM = b"\xef\xbb\xbf"
_KIND = {
    "start_map": "an object",
    "start_array": "an array",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


class _SkipBom:
    """Drops a UTF-8 byte order mark (``json.load`` of ``utf-8-sig`` text accepts one; yajl does not)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._head: bytes | None = None

    def read(self, size: int = -1) -> bytes:
        if self._head is None:
            head = self._stream.read(3)
            self._head = b"" if head == _BOM else head
        if self._head:
            if size is None or size < 0:
                out, self._head = self._head + self._stream.read(), b""
                return out
            if size == 0:
                return b""
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._stream.read(size)


def _events(stream: BinaryIO, file: str) -> Iterator[tuple[str, Any]]:
    try:
        yield from ijson.basic_parse(_SkipBom(stream), use_float=True)
    except ijson.JSONError as exc:
        raise ArchiveError("invalid_json", f"invalid JSON ({_describe(exc)})", file=file) from None


def _describe(exc: Exception) -> str:
    # yajl says what is wrong on the first line and shows the text around the spot on the second.
    text = str(exc).strip()
    if text.startswith(("b'", 'b"')):  # the message itself came as bytes (invalid UTF-8): no context then
        return text[2:].split("\\n")[0][:200]
    lines = text.splitlines() or [type(exc).__name__]
    what = lines[0][:200]
    if len(lines) > 1 and "right here" not in lines[1]:
        near = " ".join(lines[1].split())[:60]
        if near:
            return f"{what}, near: {near}"
    return what


def _too_long(file: str, limits: ArchiveLimits, what: str) -> ArchiveError:
    return ArchiveError("string_too_long", f"a JSON {what} longer than {limits.max_string_chars} characters", file=file)


def _is_text(value: str) -> bool:
    """False for strings holding a lone surrogate: valid JSON (``"\\ud800"``), but not text any database stores."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_text(file: str, stack: list[Any], keys: list[Any], position: int, in_key: bool) -> ArchiveError:
    record = stack[0] if stack else None
    record_id = record.get("id") if type(record) is dict else None
    if isinstance(record_id, bool) or not isinstance(record_id, int | str) or len(str(record_id)) > 64:
        record_id = None
    path = []
    for i, container in enumerate(stack):
        if type(container) is dict:
            if keys[i] is not None:
                path.append(str(keys[i]))
        else:  # the index of the item being built: the last one below the top, the next one at the top
            path.append(str(len(container) - (1 if i < len(stack) - 1 else 0)))
    field = ".".join(path) or None
    where = f"a key inside {field}" if in_key and field else "a key" if in_key else field or "a value"
    detail = f"{where} is not valid text (bytes that are not UTF-8, or a lone surrogate)"
    return ArchiveError("invalid_text", detail, file=file, record_id=record_id, field=field,
                        position=position if record_id is None else None)


def _values(events: Iterator[tuple[str, Any]], file: str, limits: ArchiveLimits, base_depth: int) -> Iterator[Any]:
    """Complete values at the current level, until the enclosing array ends (or the stream does)."""
    stack: list[Any] = []
    keys: list[Any] = []
    done = [0]  # values completed at this level: the position of the one being built
    try:
        yield from _build(events, file, limits, base_depth, stack, keys, done)
    except UnicodeDecodeError:  # yajl hands over the raw bytes of a string; they were not UTF-8
        raise _bad_text(file, stack, keys, done[0], in_key=False) from None


def _build(events: Iterator[tuple[str, Any]], file: str, limits: ArchiveLimits, base_depth: int,
           stack: list[Any], keys: list[Any], done: list[int]) -> Iterator[Any]:
    max_chars = limits.max_string_chars
    max_depth = limits.max_depth - base_depth
    for event, value in events:
        if event == "map_key":
            if len(value) > max_chars:
                raise _too_long(file, limits, "key")
            if not _is_text(value):
                raise _bad_text(file, stack, keys, done[0], in_key=True)
            keys[-1] = value
            continue
        if event == "start_map" or event == "start_array":
            if len(stack) >= max_depth:
                raise ArchiveError("too_deep", f"JSON nested deeper than {limits.max_depth} levels", file=file)
            container: Any = {} if event == "start_map" else []
            if stack:
                parent = stack[-1]
                if type(parent) is dict:
                    parent[keys[-1]] = container
                else:
                    parent.append(container)
            stack.append(container)
            keys.append(None)
            continue
        if event == "end_map" or event == "end_array":
            if not stack:
                return  # the enclosing array ended
            finished = stack.pop()
            keys.pop()
            if not stack:
                done[0] += 1
                yield finished
            continue
        if event == "string":
            if len(value) > max_chars:
                raise _too_long(file, limits, "string")
            if not _is_text(value):
                raise _bad_text(file, stack, keys, done[0], in_key=False)
        if stack:
            parent = stack[-1]
            if type(parent) is dict:
                parent[keys[-1]] = value
            else:
                parent.append(value)
        else:
            yield value


def iter_array(stream: BinaryIO, file: str, limits: ArchiveLimits) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time (trailing garbage is an error at the end)."""
    events = _events(stream, file)
    first = next(events, None)
    if first is None:
        raise ArchiveError("invalid_json", "invalid JSON (empty file)", file=file)
    if first[0] != "start_array":
        raise ArchiveError(
            "wrong_top_level_type", f"expected a JSON array, found {_KIND.get(first[0], first[0])}", file=file
        )
    count = 0
    for value in _values(events, file, limits, base_depth=1):
        count += 1
        if count > limits.max_records:
            raise ArchiveError("too_many_records", f"more than {limits.max_records} records", file=file)
        yield value
    for _ in events:  # drains the parser so that trailing content is reported
        pass


def load_object(stream: BinaryIO, file: str, limits: ArchiveLimits) -> dict[str, Any]:
    """A file holding one JSON object (``event``, ``meta``)."""
    events = _events(stream, file)
    first = next(events, None)
    if first is None:
        raise ArchiveError("invalid_json", "invalid JSON (empty file)", file=file)
    if first[0] != "start_map":
        raise ArchiveError(
            "wrong_top_level_type", f"expected a JSON object, found {_KIND.get(first[0], first[0])}", file=file
        )

    def with_first() -> Iterator[tuple[str, Any]]:
        yield first
        yield from events

    values = list(_values(with_first(), file, limits, base_depth=0))
    for _ in events:
        pass
    return values[0]
