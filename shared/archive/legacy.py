"""The legacy Open Event archive format: file names, key order, byte-exact serialization, media paths.

Pure logic, no database. ``../shared/samples/FORMAT.md`` is the reference; the golden files in
``open_event/legacy/`` (FOSSASIA16, OTS16, EhealthAfrica) reproduce byte for byte with these rules.
"""

from __future__ import annotations

import functools
import json
import math
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

# Archive members in the order the legacy server wrote them.
FILES: tuple[str, ...] = (
    "event",
    "microlocations",
    "sessions",
    "speakers",
    "sponsors",
    "tracks",
    "session_types",
    "forms",
    "meta",
)
# Files holding a JSON array of records (``event`` and ``meta`` are single objects).
ARRAY_FILES: tuple[str, ...] = FILES[1:-1]

LEADING_FIELDS: dict[str, tuple[str, ...]] = {
    "event": (
        "id",
        "name",
        "latitude",
        "longitude",
        "location_name",
        "start_time",
        "end_time",
        "timezone",
        "description",
        "background_image",
        "logo",
        "organizer_name",
        "organizer_description",
        "event_url",
        "social_links",
        "ticket_url",
        "privacy",
        "type",
        "topic",
        "sub_topic",
        "code_of_conduct",
        "copyright",
    ),
    "microlocations": ("id", "name", "floor"),
    "sessions": (
        "id",
        "title",
        "subtitle",
        "short_abstract",
        "long_abstract",
        "start_time",
        "end_time",
        "session_type",
        "track",
        "comments",
        "language",
        "slides",
        "audio",
        "video",
    ),
    "speakers": (
        "id",
        "name",
        "email",
        "mobile",
        "photo",
        "organisation",
        "position",
        "country",
        "short_biography",
        "long_biography",
        "website",
        "twitter",
        "facebook",
        "github",
        "linkedin",
    ),
    "sponsors": ("id", "name", "logo", "level", "sponsor_type", "url", "description"),
    "tracks": ("id", "name", "color", "font_color"),
    "session_types": ("id", "name", "length"),
    "forms": (),
    "meta": (),
}

_INDENT = "    "


# --------------------------------------------------------------------------------------------------------------- order


def _order_nested(value: Any) -> Any:
    # The legacy server sorted nested objects one level deep only; deeper levels keep their own order.
    if isinstance(value, dict):
        return {k: value[k] for k in sorted(value)}
    if isinstance(value, list):
        return [{k: item[k] for k in sorted(item)} if isinstance(item, dict) else item for item in value]
    return value


def order_record(file: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Key order of a top-level record: the file's leading fields (those present), then the rest alphabetically.

    Nested objects are key-sorted, and so is each object of a nested list (one level deep).
    """
    leading = LEADING_FIELDS.get(file, ())
    out: dict[str, Any] = {}
    for key in leading:
        if key in record:
            value = record[key]
            out[key] = _order_nested(value) if isinstance(value, (dict, list)) else value
    for key in sorted(record):
        if key not in out:
            value = record[key]
            out[key] = _order_nested(value) if isinstance(value, (dict, list)) else value
    return out


def normalize_value(value: Any) -> Any:
    """The form a value takes in the output (nested key order applied): what two values are compared by."""
    return _order_nested(value)


# ----------------------------------------------------------------------------------------------------------- serialize
# json.dumps with indent runs the pure-Python encoder; this writer produces the same text faster by keeping the
# C string escaper for leaves and building the layout by hand. Unit tests compare it with json.dumps.

try:  # CPython ships the C escaper; fall back to the pure-Python one elsewhere.
    from _json import encode_basestring as _encode_str  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    from json.encoder import encode_basestring as _encode_str  # type: ignore[attr-defined,no-redef]


def _float_text(value: float) -> str:
    # Same spelling as json.dumps (allow_nan=True), which is what Python 2 wrote too.
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return _encode_str(key)
    if key is True:
        return '"true"'
    if key is False:
        return '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return '"' + int.__repr__(key) + '"'
    if isinstance(key, float):
        return '"' + _float_text(key) + '"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 4096


def _key(key: Any) -> str:
    # Records repeat the same few keys; caching their escaped form saves a call per key.
    text = _KEY_CACHE.get(key) if type(key) is str else None
    if text is None:
        text = _key_text(key)
        if type(key) is str and len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[key] = text
    return text


_PREFIXES: dict[int, dict[str, str]] = {}


def _prefix_cache(level: int) -> dict[str, str]:
    cache = _PREFIXES.get(level)
    if cache is None:
        cache = _PREFIXES[level] = {}
    return cache


def _scalar(value: Any) -> str | None:
    """Text of a JSON scalar of an exact builtin type, or None for containers and anything else."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return _float_text(value)
    if kind is bool:
        return "true" if value else "false"
    return None


def _write(value: Any, level: int, out: list[str]) -> None:
    text = _scalar(value)
    if text is not None:
        out.append(text)
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        append, cache = out.append, _prefix_cache(level)
        first = True
        # The common scalar cases are inlined: this loop is the hot path of a large export. Each key's text with
        # its separator and indentation (", \n" + indent + '"key": ') is cached per level.
        for key, item in value.items():
            prefix = cache.get(key) if type(key) is str else None
            if prefix is None:
                prefix = ", \n" + _INDENT * (level + 1) + _key(key) + ": "
                if type(key) is str and len(cache) < _KEY_CACHE_MAX:
                    cache[key] = prefix
            if first:
                prefix = "{" + prefix[2:]
                first = False
            kind = type(item)
            if kind is str:
                append(prefix + _encode_str(item))
            elif item is None:
                append(prefix + "null")
            else:
                text = _scalar(item)
                if text is not None:
                    append(prefix + text)
                else:
                    append(prefix)
                    _write(item, level + 1, out)
        append("\n" + _INDENT * level + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = "\n" + _INDENT * (level + 1)
        sep = "[" + inner
        for item in value:
            text = _scalar(item)
            if text is not None:
                out.append(sep + text)
            else:
                out.append(sep)
                _write(item, level + 1, out)
            sep = ", " + inner
        out.append("\n" + _INDENT * level + "]")
    elif isinstance(value, str):  # str subclasses
        out.append(_encode_str(value))
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float_text(value))
    else:
        # Anything exotic: let json decide (it raises TypeError for unserializable objects).
        out.append(json.dumps(value, ensure_ascii=False))


def dump_record(record: Any, level: int = 0) -> str:
    """``json.dumps(record, indent=4, ensure_ascii=False, separators=(", ", ": "))``, nested at ``level``."""
    out: list[str] = []
    _write(record, level, out)
    return "".join(out)


def dump_object(obj: Mapping[str, Any], *, sort_keys: bool = False) -> str:
    """A single-object file (``event``, ``meta``); ``meta`` is written with ``sort_keys=True``."""
    if sort_keys:
        return json.dumps(obj, indent=4, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return dump_record(dict(obj))


def dump_meta(meta: Mapping[str, Any]) -> str:
    return dump_object(meta, sort_keys=True)


def iter_array_text(records: Iterable[Any]) -> Iterator[str]:
    """The text of ``json.dumps(list(records), indent=4, ...)`` yielded record by record (memory stays flat)."""
    first = True
    for record in records:
        yield ("[\n" + _INDENT if first else ", \n" + _INDENT) + dump_record(record, 1)
        first = False
    yield "[]" if first else "\n]"


# ------------------------------------------------------------------------------------------------------- value helpers


def format_datetime(value: datetime | None) -> str | None:
    """Naive wall time ``YYYY-MM-DDTHH:MM:SS`` (seconds precision, any zone info ignored)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return _format_naive(value)


@functools.lru_cache(maxsize=4096)  # naive only: aware values of one instant are equal whatever their wall time
def _format_naive(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


_LENGTH_RE = re.compile(r"^\s*(\d{1,4})(?:[:.](\d{1,4}))?\s*$")


@functools.lru_cache(maxsize=4096)  # a function of the text (non-strings, equal or not, all give None)
def nested_session_type_length(length: str | None) -> float | None:
    """``session.session_type.length`` as the legacy server wrote it: ``"HH:MM"`` read as the decimal ``HH.MM``.

    Every golden session maps ``"00:30"`` (and ``"0:30"``) to ``0.3``; 2016 archives stored that same float.
    So ``"01:30"`` gives ``1.3`` (not 1.5 hours). Anything unparsable gives ``None``.
    """
    if not isinstance(length, str):
        return None
    match = _LENGTH_RE.match(length)
    if match is None:
        return None
    hours, minutes = match.group(1), match.group(2)
    return float(f"{int(hours)}.{minutes}") if minutes is not None else float(int(hours))


# --------------------------------------------------------------------------------------------------------------- media

_SLUG_DROP = re.compile(r'[<>:"/\\|?*;]')
_EXT_RE = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def name_slug(name: str | None) -> str:
    """``"Hong Phuc Dang"`` -> ``"HongPhucDang"``: unsafe characters become spaces, words are title-cased and joined.

    Per-word ``str.title`` matches the golden files (``hackerspace.sg`` -> ``Hackerspace.Sg``).
    """
    if not name:
        return ""
    return "".join(word.title() for word in _SLUG_DROP.sub(" ", name).split())


def url_extension(url: str | None) -> str:
    """Extension of the last path segment of ``url`` (``".jpg"``), or ``""`` when it has none."""
    if not url:
        return ""
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    ext = posixpath.splitext(posixpath.basename(unquote(path)))[1]
    return ext if _EXT_RE.match(ext) else ""


@dataclass(frozen=True)
class MediaField:
    """One media slot of the format: ``file.field`` is fetched when ``flag`` is set and stored at ``template``."""

    file: str
    field: str
    flag: str
    template: str  # zip-relative with leading "/", placeholders {name} and {id}; the extension is appended

    def path(self, record: Mapping[str, Any], url: str | None = None) -> str:
        source = record.get(self.field) if url is None else url
        base = self.template.format(name=name_slug(record.get("name")), id=record.get("id"))
        return base + url_extension(source if isinstance(source, str) else None)


MEDIA_FIELDS: tuple[MediaField, ...] = (
    MediaField("event", "logo", "image", "/images/logo"),
    MediaField("event", "background_image", "image", "/images/background"),
    MediaField("speakers", "photo", "image", "/images/speakers/{name}_{id}"),
    MediaField("sponsors", "logo", "image", "/images/sponsors/{name}_{id}"),
    MediaField("tracks", "track_image_url", "image", "/images/tracks/image_{id}"),
    MediaField("sessions", "slides", "document", "/slides/session_{id}"),
    MediaField("sessions", "audio", "audio", "/audios/session_{id}"),
    MediaField("sessions", "video", "video", "/videos/session_{id}"),
)


_MEDIA_BY_FILE: dict[str, tuple[MediaField, ...]] = {}
for _media in MEDIA_FIELDS:
    _MEDIA_BY_FILE[_media.file] = (*_MEDIA_BY_FILE.get(_media.file, ()), _media)


def media_fields(file: str) -> tuple[MediaField, ...]:
    return _MEDIA_BY_FILE.get(file, ())  # asked for every record of every pass: looked up, not rebuilt


def media_path(file: str, field: str, record: Mapping[str, Any], url: str | None = None) -> str | None:
    """Zip-relative path (leading ``/``) for ``record[field]`` (or ``url``), or ``None`` if it is not a media slot."""
    for media in MEDIA_FIELDS:
        if media.file == file and media.field == field:
            return media.path(record, url)
    return None


@dataclass(frozen=True)
class MediaTarget:
    field: str
    flag: str
    url: str
    path: str  # with leading "/", what the record carries once the media is included

    @property
    def member(self) -> str:
        """Name of the zip member (no leading slash)."""
        return self.path.lstrip("/")


def media_targets(file: str, record: Mapping[str, Any], flags: Mapping[str, bool] | Iterable[str]) -> list[MediaTarget]:
    """Media of ``record`` selected by the export flags (``{"image": True}`` or ``["image"]``), with their paths.

    Only non-empty string values are returned; deciding which URLs are fetchable is the caller's job.
    """
    enabled = {k for k, v in flags.items() if v} if isinstance(flags, Mapping) else set(flags)
    targets = []
    for media in media_fields(file):
        url = record.get(media.field)
        if media.flag in enabled and isinstance(url, str) and url:
            targets.append(MediaTarget(media.field, media.flag, url, media.path(record, url)))
    return targets
