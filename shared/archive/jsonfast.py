"""The fast path of ``jsonstream.iter_array``: records of a top-level JSON array parsed by ``json``'s C decoder.

A record is handed out only when the checking parser (``jsonstream``, yajl events assembled in Python) would have
produced the same value without a complaint: its text is at most ``max_string_chars`` long (so no string, key,
number or run of blanks in it can be over a limit), it holds no lone surrogate (escaped), no NaN or Infinity and no
number yajl refuses but Python reads (integers past int64, floats past the double range), its nesting and relation
lists are within their limits, and its bytes are UTF-8. At the first record (or byte) that does not pass,
``FastArray`` stops with ``done`` false, and ``rest()`` gives the raw bytes it has read from the start of the last
record it handed out (from the start of the member if none): the checking parser carries on from there (reading
that record again, so that its messages quote the same text around a fault) and reports whatever is wrong as if it
had read the whole member itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from shared.archive.safezip import ArchiveError, ArchiveLimits

CHUNK = 64 * 1024
MARGIN = 16 * 1024  # most records are shorter
MAX_CHARS = 4 * 2**20  # longer records go through the checking parser whatever max_string_chars allows
_WS = re.compile(r"[ \t\n\r]*")  # JSON's blanks, nothing else (str.isspace knows many more)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Unsure(Exception):
    """What comes next is the checking parser's to judge."""


def _no_constant(name: str) -> Any:
    raise _Unsure(name)


def _int64(text: str) -> int:
    value = int(text)
    if not -_INT64 < value < _INT64:
        raise _Unsure("integer overflow")  # yajl refuses what does not fit a long long, and -2**63 too
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise _Unsure("floating point overflow")  # yajl refuses 1e400; Python reads inf
    return value


_INF = float("inf")
_INT64 = 2**63
_DECODE = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, parse_int=_int64).raw_decode


def _complete(data: bytes) -> int:
    """Length of ``data`` without an incomplete UTF-8 character at its end (invalid bytes are left to decode)."""
    n = len(data)
    for i in range(n - 1, max(n - 4, -1), -1):
        byte = data[i]
        if byte < 0x80:
            return n
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if i + need <= n else i
    return n


def is_text(value: str) -> bool:
    """False for strings holding a lone surrogate: valid JSON (``"\\ud800"``), but not text any database stores."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_text(value: Any) -> bool:
    """No string (key or value) inside holds a lone surrogate."""
    if type(value) is str:
        return is_text(value)
    if type(value) is dict:
        return all(_all_text(k) and _all_text(v) for k, v in value.items())
    if type(value) is list:
        return all(_all_text(v) for v in value)
    return True


def _depth(value: Any) -> int:
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return 0
    return 1 + max((_depth(child) for child in children), default=0)


class FastArray:
    """Iterate over it once; then ``done`` says whether the whole array was read, else see ``rest``."""

    def __init__(self, stream: BinaryIO, file: str, limits: ArchiveLimits,
                 fan_out: Sequence[tuple[str, int]] = ()) -> None:
        self.stream, self.file, self.limits = stream, file, limits
        self.cap = min(limits.max_string_chars, MAX_CHARS)
        self.margin = min(MARGIN, self.cap)  # text kept ahead of a record (at most cap: see _fill's limit)
        self.depth = limits.max_depth - 1  # a record's own nesting (the array is the first level)
        self.fan_out = tuple(fan_out)  # (key, most entries) of the records' relation lists
        self.raw = b""  # bytes read, from the last point text was forgotten up to
        self.text = ""  # raw decoded, but for an incomplete character at its end
        self.decoded = 0  # bytes of raw that text holds
        self.keep = 0  # position in text of the last record handed out (0: nothing handed out yet)
        self.eof = False
        self.count = 0
        self.done = False

    def rest(self) -> bytes:
        head = self.text[: self.keep]
        return self.raw[self.keep if head.isascii() else len(head.encode("utf-8")):]

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._records()
        except (_Unsure, RecursionError):
            return

    def _fill(self) -> int:
        """Forget the text before ``keep`` and read one more chunk; returns how far positions moved back."""
        shift = self.keep
        if shift:
            head = self.text[:shift]
            used = shift if head.isascii() else len(head.encode("utf-8"))
            self.raw, self.text, self.decoded = self.raw[used:], self.text[shift:], self.decoded - used
            self.keep = 0
        if len(self.text) > 2 * self.cap:  # the last record and what follows it
            raise _Unsure("a long record or run of blanks")
        chunk = self.stream.read(CHUNK)
        if not chunk:
            self.eof = True
        self.raw += chunk
        tail = self.raw[self.decoded:]
        cut = len(tail) if self.eof else _complete(tail)
        try:
            self.text += tail[:cut].decode("utf-8")
        except UnicodeDecodeError:
            raise _Unsure("not UTF-8") from None
        self.decoded += cut
        return shift

    def _skip(self, pos: int) -> int:
        """The next position that is not blank (``len(text)`` at the end of the member)."""
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text) or self.eof:
                return pos
            pos -= self._fill()

    def _records(self) -> Iterator[Any]:
        while not self.text and not self.eof:
            self._fill()
        pos = self._skip(1 if self.text.startswith("\ufeff") else 0)
        if pos >= len(self.text) or self.text[pos] != "[":
            raise _Unsure("not an array")
        pos += 1
        first = expect_value = True
        limit = self.limits.max_records
        while True:
            pos = self._skip(pos)
            if pos >= len(self.text):
                raise _Unsure("unterminated")
            char = self.text[pos]
            if char == "]" and (first or not expect_value):
                self._trailing(pos + 1)
                self.done = True
                return
            if not expect_value:
                if char != ",":
                    raise _Unsure("no comma")
                pos += 1
                expect_value = True
                continue
            if not self.eof and len(self.text) - pos < self.margin:
                # Read ahead before a record would run past the text: a failed decode costs a JSONDecodeError,
                # which counts the lines of everything before it.
                pos -= self._fill()
            while True:
                try:
                    value, end = _DECODE(self.text, pos)
                except json.JSONDecodeError:
                    if self.eof:
                        raise _Unsure("invalid") from None
                except ValueError:  # a number too long for int()
                    raise _Unsure("unreadable") from None
                else:
                    # a value ending with the text read so far may be a number cut short
                    if end < len(self.text) or self.eof:
                        break
                # At least double what the record has so far before trying again: a long record is parsed a few
                # times, not once per chunk.
                wanted = 2 * max(len(self.text) - pos, CHUNK)
                while not self.eof and len(self.text) - pos < wanted:
                    pos -= self._fill()
            self._check(value, pos, end)
            self.count += 1
            if self.count > limit:
                raise ArchiveError("too_many_records", f"more than {limit} records", file=self.file)
            self.keep, pos = pos, end
            first = expect_value = False
            yield value

    def _trailing(self, pos: int) -> None:
        while True:
            pos = _WS.match(self.text, pos).end()
            if pos < len(self.text):
                raise _Unsure("trailing content")
            if self.eof:
                return
            pos -= self._fill()

    def _check(self, value: Any, pos: int, end: int) -> None:
        text = self.text
        if end - pos > self.cap:
            raise _Unsure("long record")
        # (a one-character find is the cheap test; most records hold no backslash at all)
        if text.find("\\", pos, end) != -1 and _SURROGATE_ESCAPE.search(text, pos, end) and not _all_text(value):
            raise _Unsure("a lone surrogate")  # pairs (escaped emoji) decode to one character and pass
        if text.count("{", pos, end) + text.count("[", pos, end) > self.depth and _depth(value) > self.depth:
            raise _Unsure("deep")
        if self.fan_out and type(value) is dict:
            for key, most in self.fan_out:
                items = value.get(key)
                if type(items) is list and len(items) > most:
                    raise _Unsure("long relation list")
