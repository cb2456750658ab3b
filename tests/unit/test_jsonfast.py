"""The C-decoder fast path of ``iter_array`` gives exactly what the checking parser gives: the same records, or the
same error (code, record, field, position, message), wherever in the member the fast path hands over."""

from __future__ import annotations

import io
import json
import random

import pytest

from shared.archive import jsonfast
from shared.archive.jsonstream import iter_array
from shared.archive.safezip import ArchiveError, ArchiveLimits

SESSION = {"id": 1, "title": "Open hardware in J\u00fcrgen's lab \U0001f600", "start_time": "2016-03-18T09:30:00",
           "track": {"id": 2, "name": "IoT"}, "speakers": [{"id": 3, "name": "Hong Phuc"}], "lat": 1.25,
           "note": None, "flag": True, "big": 1234567890123456789, "neg": -0.0, "exp": 1e-07}


def _records(n: int) -> list[dict]:
    return [{**SESSION, "id": i, "title": f"{SESSION['title']} {i}"} for i in range(1, n + 1)]


def _outcome(data: bytes, file: str = "sessions", limits: ArchiveLimits | None = None):
    seen = []
    try:
        for record in iter_array(io.BytesIO(data), file, limits or ArchiveLimits()):
            seen.append(record)
    except ArchiveError as exc:
        return seen, exc.to_dict()
    return seen, None


def _checked(monkeypatch, data: bytes, file: str = "sessions", limits: ArchiveLimits | None = None):
    """What the checking parser alone says (the fast path vouches for nothing)."""
    with monkeypatch.context() as m:
        m.setattr(jsonfast, "MAX_CHARS", 0)
        return _outcome(data, file, limits)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False) and repr(a) == repr(b)


GOOD = [
    json.dumps(_records(30), indent=4, ensure_ascii=False).encode(),
    json.dumps(_records(30)).encode(),
    b"\xef\xbb\xbf" + json.dumps(_records(3)).encode(),
    b"[]", b"  [ ]  \n", b"[1, 2.5, \"x\", null, true, [], {}]",
    b'[{"a": 1, "a": 2, "b": 3}]',  # a duplicated key: the last value at the first position
    b'[{"t": "\\ud83d\\ude00 escaped pair"}]',
    b'[{"t": "\\u00e9\\n\\t\\"\\\\"}]',
    b'[{"n": 9223372036854775807, "m": -9223372036854775807, "s": "12345678901234567890", "f": 1e-400}]',
]
BAD = [
    b"", b"   ", b"{}", b'"x"', b"[", b"[1,", b"[1,]", b"[1 2]", b"[1] x", b"[1]]", b"[,1]",
    b'[{"id": 1}, {"id": 2, "t": "\\udc00"}]',
    b'[{"id": 1}, {"id": 7, "color": "\xed\xa0\x80"}]',
    b'[{"id": 1}, {"id": 2, "v": NaN}]', b'[{"id": 1}, Infinity]', b"[-Infinity]",
    b'[{"id": 1}, {"id": 2, "t": "a\x01b"}]',
    b'[{"id": 1}, {"id": 2, "t": "x"]',
    b'[{"id": 1}, {"id": 2, "n": 0' + b"1" * 5000 + b"}]",
    b'[{"id": 1}, {"id": 3, "speakers": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]}]',
    b'[{"id": 1}, ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"]",
    b"[" + b"[" * 70 + b"]" * 70 + b"]",
    b'[{"id": 1}, {"id": 2, "t": "\xff"}]',
    b'[{"id": 1}, {"id": 2, "t": "\xc3"}]',
    b"[1]" + b" " * 100 + b"\x00",
    b'[{"id": 1}, {"id": 2, "n": 9223372036854775808}]', b'[{"id": 1}, {"id": 2, "n": -9223372036854775809}]',
    b'[{"id": 1}, {"id": 2, "f": 1e400}]', b'[{"id": 1}, {"id": 2, "f": -0.1e999}]',
]


@pytest.mark.parametrize("data", GOOD)
def test_plain_records_are_read_as_json_reads_them(monkeypatch, data):
    fast = _outcome(data)
    assert fast[1] is None
    assert _same(fast[0], json.loads(data.decode("utf-8-sig")))
    assert _same(fast, _checked(monkeypatch, data))


@pytest.mark.parametrize("data", BAD)
@pytest.mark.parametrize("chunk", [3, 64 * 1024])
def test_anything_else_gets_the_checking_parsers_answer(monkeypatch, data, chunk):
    limits = ArchiveLimits(max_session_speakers=3)
    monkeypatch.setattr(jsonfast, "CHUNK", chunk)
    expected = _checked(monkeypatch, data, limits=limits)
    got = _outcome(data, limits=limits)
    assert _same(got[0], expected[0])
    assert _error(got[1]) == _error(expected[1])


def _error(error: dict | None) -> dict | None:
    # The text yajl quotes around a fault is what its read buffer holds there: it may start later or earlier
    # when the buffers are cut elsewhere (as they are when the checking parser takes over mid-member).
    if error is None:
        return None
    return {**error, "message": error["message"].split(", near: ")[0]}


@pytest.mark.parametrize("seed", range(16))
def test_chunk_boundaries_anywhere_change_nothing(monkeypatch, seed):
    rnd = random.Random(seed)
    records = _records(rnd.randint(1, 12))
    data = json.dumps(records, indent=rnd.choice([None, 4]), ensure_ascii=rnd.random() < 0.5).encode()
    if rnd.random() < 0.5:  # and a record the fast path hands over, somewhere
        cut = data.rindex(b"}")
        data = data[:cut] + b', "x": "\\udc00"' + data[cut:]
    monkeypatch.setattr(jsonfast, "CHUNK", rnd.randint(1, 50))
    monkeypatch.setattr(jsonfast, "MARGIN", rnd.choice([0, 1, rnd.randint(2, 200), 16 * 1024]))  # read-ahead too
    assert _outcome(data) == _checked(monkeypatch, data)


def test_limits_apply_to_fast_records_too(monkeypatch):
    data = json.dumps(_records(5)).encode()
    limits = ArchiveLimits(max_records=3)
    assert _outcome(data, limits=limits) == _checked(monkeypatch, data, limits=limits)
    assert _outcome(data, limits=limits)[1]["code"] == "too_many_records"
    short = ArchiveLimits(max_string_chars=20)
    got = _outcome(data, limits=short)
    assert got == _checked(monkeypatch, data, limits=short)
    assert got[1]["code"] == "string_too_long"
