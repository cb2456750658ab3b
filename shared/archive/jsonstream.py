"""Streaming JSON for archive members: records come out one at a time, with limits on strings, depth and count.

ijson's C backend (yajl) tokenizes; the values are assembled here so that nesting depth and string length are
checked before anything large or deep is built. Values match ``json.load``: the same types (``use_float``), the
same key order, and for a duplicated key the last value wins at the key's first position.

Strings are bounded before they are built: yajl buffers a whole token (a string, a number) inside one C call
before it hands it over, so the raw bytes read while the parser produces no event are counted (``_Meter``), and a
token longer than ``BYTES_PER_CHAR * max_string_chars`` raw bytes is refused as it goes by; the exact character
count is checked again on the value. Relation lists (a session's ``speakers``, a speaker's or a track's
``sessions``) are refused once they exceed their limit, while they are read.

Error codes: ``invalid_json``, ``wrong_top_level_type``, ``string_too_long``, ``number_too_long``, ``too_deep``,
``too_many_records``, ``too_many_relations``,
``invalid_text`` (bytes that are not UTF-8, or a lone surrogate such as ``"\\udc00"``, naming record and field)
(and whatever the member reader raises: ``bad_zip``,
``member_too_large``, ``compression_ratio``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson

from shared.archive.jsonfast import FastArray, is_text
from shared.archive.safezip import ArchiveError, ArchiveLimits

_BOM = b"\xef\xbb\xbf"
# Most raw bytes one character of a JSON string can take: an escaped surrogate pair, "\\ud83d\\ude00", is 12.
BYTES_PER_CHAR = 12
_BLANK = b" \t\r\n"
_NUMBER = b"0123456789+-.eE"
# Errors about one value: the message names its record and field.
_NAMED = {"string_too_long", "number_too_long", "too_many_relations"}
# Relation lists per file: key -> (ArchiveLimits field, what the entries are).
FAN_OUT = {
    "sessions": {"speakers": ("max_session_speakers", "speakers")},
    "speakers": {"sessions": ("max_speaker_sessions", "sessions")},
    "tracks": {"sessions": ("max_track_sessions", "sessions")},
}
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


class _Meter:
    """Counts the raw bytes the parser read since it last produced an event; refuses more than ``cap``.

    yajl reads in chunks and reports a chunk's events before it reads the next, so a chunk without an event lies
    wholly inside one token (or a run of blanks): the count never exceeds the current token's length, and a token
    of at most ``cap`` bytes always passes."""

    def __init__(self, stream: Any, cap: int, file: str, limits: ArchiveLimits) -> None:
        self._stream, self.cap, self.file, self.limits = stream, cap, file, limits
        self.pending = 0
        self._last = b""

    def read(self, size: int = -1) -> bytes:
        if self.pending > self.cap:
            raise self._error()
        data = self._stream.read(size)
        self.pending += len(data)
        self._last = data
        return data

    def _error(self) -> ArchiveError:
        sample = self._last[-4096:]
        if not sample.strip(_BLANK):
            return ArchiveError("invalid_json", f"invalid JSON (more than {self.cap} bytes of blank space)",
                                file=self.file)
        if not sample.strip(_BLANK + _NUMBER):
            return ArchiveError("number_too_long", f"a JSON number longer than {self.cap} characters",
                                file=self.file)
        return ArchiveError("string_too_long", f"a JSON string longer than {self.limits.max_string_chars} "
                            f"characters (stopped after {self.pending} bytes of it)", file=self.file)


def _events(stream: BinaryIO, file: str, limits: ArchiveLimits) -> Iterator[tuple[str, Any]]:
    meter = _Meter(_SkipBom(stream), max(BYTES_PER_CHAR * limits.max_string_chars, 1024), file, limits)
    try:
        for item in ijson.basic_parse(meter, use_float=True):
            meter.pending = 0
            yield item
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


def _record_error(exc: ArchiveError, stack: list[Any], keys: list[Any], position: int | None) -> ArchiveError:
    """``exc`` (raised while a record was being read) with the record and the field named."""
    if not stack or exc.record_id is not None or exc.code not in _NAMED:
        return exc
    record = stack[0]
    record_id = record.get("id") if type(record) is dict else None
    if type(record_id) not in (int, str) or len(str(record_id)) > 64:
        record_id = None  # the id is not read yet (or unprintable): the position tells the record
    field = exc.field
    if field is None and type(record) is dict and isinstance(keys[0], str) and len(keys[0]) <= 64:
        field = keys[0]
    return ArchiveError(exc.code, exc.detail, file=exc.file, record_id=record_id, field=field,
                        position=None if record_id is not None else position)


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


def _values(events: Iterator[tuple[str, Any]], file: str, limits: ArchiveLimits, base_depth: int,
            first_position: int = 0) -> Iterator[Any]:
    """Complete values at the current level, until the enclosing array ends (or the stream does)."""
    stack: list[Any] = []
    keys: list[Any] = []
    done = [first_position]  # values completed at this level: the position of the one being built
    try:
        yield from _build(events, file, limits, base_depth, stack, keys, done)
    except UnicodeDecodeError:  # yajl hands over the raw bytes of a string; they were not UTF-8
        raise _bad_text(file, stack, keys, done[0], in_key=False) from None
    except ArchiveError as exc:
        raise _record_error(exc, stack, keys, done[0] if base_depth == 1 else None) from None


def _build(events: Iterator[tuple[str, Any]], file: str, limits: ArchiveLimits, base_depth: int,
           stack: list[Any], keys: list[Any], done: list[int]) -> Iterator[Any]:
    max_chars = limits.max_string_chars
    max_depth = limits.max_depth - base_depth
    fan_out = {key: (getattr(limits, name), what) for key, (name, what) in FAN_OUT.get(file, {}).items()} \
        if base_depth == 1 else {}
    watched: Any = None  # the relation list of the current record being filled, if it has a limit
    watched_limit = 0
    for event, value in events:
        if event == "map_key":
            if len(value) > max_chars:
                raise _too_long(file, limits, "key")
            if not is_text(value):
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
                    if fan_out and len(stack) == 1 and keys[-1] in fan_out and event == "start_array":
                        watched, (watched_limit, _) = container, fan_out[keys[-1]]
                else:
                    if parent is watched and len(parent) >= watched_limit:
                        raise _fan_out_error(file, keys[0], fan_out[keys[0]])
                    parent.append(container)
            stack.append(container)
            keys.append(None)
            continue
        if event == "end_map" or event == "end_array":
            if not stack:
                return  # the enclosing array ended
            finished = stack.pop()
            keys.pop()
            if finished is watched:
                watched = None
            if not stack:
                done[0] += 1
                yield finished
            continue
        if event == "string":
            if len(value) > max_chars:
                raise _too_long(file, limits, "string")
            if not is_text(value):
                raise _bad_text(file, stack, keys, done[0], in_key=False)
        if stack:
            parent = stack[-1]
            if type(parent) is dict:
                parent[keys[-1]] = value
            else:
                if parent is watched and len(parent) >= watched_limit:
                    raise _fan_out_error(file, keys[0], fan_out[keys[0]])
                parent.append(value)
        else:
            yield value


def _fan_out_error(file: str, key: str, limit: tuple[int, str]) -> ArchiveError:
    count, what = limit
    return ArchiveError("too_many_relations", f"{key} lists more than {count} {what} (the limit per record)",
                        file=file, field=key)


def iter_array(stream: BinaryIO, file: str, limits: ArchiveLimits) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time (trailing garbage is an error at the end).

    Plain records come from the C decoder (``jsonfast.py``); from the first one it cannot vouch for, the rest of the
    member goes through the checking parser here, which reports what is wrong as if it had read it all."""
    fan_out = [(key, getattr(limits, name)) for key, (name, _) in FAN_OUT.get(file, {}).items()]
    fast = FastArray(stream, file, limits, fan_out)
    yield from fast
    if fast.done:
        return
    count = fast.count
    rest = _Chain(fast.rest(), stream)
    if count == 0:
        events = _events(rest, file, limits)
        first = next(events, None)
        if first is None:
            raise ArchiveError("invalid_json", "invalid JSON (empty file)", file=file)
        if first[0] != "start_array":
            raise ArchiveError(
                "wrong_top_level_type", f"expected a JSON array, found {_KIND.get(first[0], first[0])}", file=file
            )
        values = _values(events, file, limits, base_depth=1)
    else:
        # The rest starts with the last record handed out: read again after a "[", it puts the checking parser in
        # the very state it would be in there, positions carrying on.
        events = _events(_Chain(b"[", rest), file, limits)
        next(events)  # start_array
        values = _values(events, file, limits, base_depth=1, first_position=count - 1)
        next(values)  # the record handed out already
    for value in values:
        count += 1
        if count > limits.max_records:
            raise ArchiveError("too_many_records", f"more than {limits.max_records} records", file=file)
        yield value
    for _ in events:  # drains the parser so that trailing content is reported
        pass


class _Chain:
    """``head``, then what ``stream`` still holds."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head, self._stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size is None or size < 0:
            out, self._head = self._head + self._stream.read(), b""
        elif len(self._head) < size:  # one read, as the parser would have had it: its messages quote its buffer
            out, self._head = self._head + self._stream.read(size - len(self._head)), b""
        else:
            out, self._head = self._head[:size], self._head[size:]
        return out


def load_object(stream: BinaryIO, file: str, limits: ArchiveLimits) -> dict[str, Any]:
    """A file holding one JSON object (``event``, ``meta``)."""
    events = _events(stream, file, limits)
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
