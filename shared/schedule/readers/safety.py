"""Hostile schedule files: size and count limits, and XML parsed with entities and external references off.

An uploaded schedule is read whole into memory (they are small: FOSDEM's 773 talks are 1.6 MB), so the file's size
is bounded first, then what parsing builds: elements, nesting depth, the length of any text. A document type that
declares entities (billion laughs) or points outside the file (XXE, external DTD) is refused outright rather than
parsed without its entities: such a file is an attack or broken, and nothing in a schedule needs entities beyond
the five XML predefines.

Characters XML 1.0 forbids (KC2015 holds U+0006) make a file not well-formed; they are removed before parsing, with
a warning naming the element they were in.

Error codes (``ArchiveError.code``): ``file_too_large``, ``xml_entities``, ``xml_external_reference``,
``not_well_formed``, ``too_many_elements``, ``too_deep``, ``text_too_long``, ``not_json``, ``bad_encoding``.
"""

from __future__ import annotations

import bisect
import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from lxml import etree

from shared.archive.safezip import ArchiveError, ArchiveLimits
from shared.schedule.xmltext import _XML_FORBIDDEN as _FORBIDDEN  # one definition of what XML 1.0 forbids


@dataclass(frozen=True)
class ScheduleLimits:
    max_file_bytes: int = 64 * 2**20  # one schedule file; a 5,000-talk schedule.xml is about 15 MB
    max_elements: int = 5_000_000  # XML elements, JSON values, iCal lines
    max_depth: int = 64
    max_string_chars: int = 1_000_000
    max_records: int = 2_000_000  # sessions, persons

    @classmethod
    def from_archive(cls, limits: ArchiveLimits) -> ScheduleLimits:
        return replace(cls(), max_file_bytes=min(cls.max_file_bytes, limits.max_member_bytes),
                       max_depth=limits.max_depth, max_string_chars=limits.max_string_chars,
                       max_records=limits.max_records)


Warn = Callable[..., None]

_CHAR_REF = re.compile(r"&#(?:x([0-9A-Fa-f]{1,8})|([0-9]{1,10}));")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")


def check_size(data: bytes, limits: ScheduleLimits, what: str) -> None:
    if len(data) > limits.max_file_bytes:
        raise ArchiveError("file_too_large", f"the {what} file is {len(data)} bytes, more than the limit of "
                           f"{limits.max_file_bytes}")


def decode_text(data: bytes, what: str, declared: str | None = None) -> str:
    """Bytes -> text by BOM, else the declared encoding, else UTF-8, falling back to Windows-1252 when nothing was
    declared (iCal and CSV files of old tools are written so at times)."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            declared = name
            break
    try:
        return data.decode(declared or "utf-8")
    except (LookupError, UnicodeDecodeError) as exc:
        if declared and declared.lower().replace("_", "-") not in ("utf-8", "utf8", "utf-8-sig"):
            raise ArchiveError("bad_encoding", f"the {what} file is not valid {declared}: {exc}") from None
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            raise ArchiveError("bad_encoding", f"the {what} file is neither UTF-8 nor Windows-1252 text") from None


_REMOVABLE = re.compile(f"{_CHAR_REF.pattern}|{_FORBIDDEN.pattern}")


def _remove_forbidden(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The text without what XML 1.0 forbids (raw or as character references), and (offset in the returned text,
    char) of each removal."""
    removed: list[tuple[int, str]] = []
    shift = 0

    def drop(match: re.Match[str]) -> str:
        nonlocal shift
        found = match.group(0)
        if found.startswith("&#"):
            code = int(match.group(1), 16) if match.group(1) else int(match.group(2))
            char = chr(code) if code <= 0x10FFFF else "\ufffd"
            if code <= 0x10FFFF and not _FORBIDDEN.match(char):
                return found
        else:
            char = found
        removed.append((match.start() - shift, char))
        shift += len(found)
        return ""

    if "&#" in text or _FORBIDDEN.search(text):
        text = _REMOVABLE.sub(drop, text)
    return text, removed


def parse_xml(data: bytes, limits: ScheduleLimits, warn: Warn, what: str = "XML") -> etree._Element:
    """The root element of a schedule XML file, parsed safely; raises ``ArchiveError`` on anything hostile."""
    check_size(data, limits, what)
    match = _ENCODING.match(data[:200])
    text = decode_text(data, what, match.group(1).decode() if match else None)
    text = _DECLARATION.sub("", text, count=1)
    text, removed = _remove_forbidden(text)
    _scan_doctype(text, what)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             dtd_validation=False, remove_comments=True, remove_pis=True, collect_ids=False)
    try:
        root = etree.fromstring(text.encode("utf-8"), parser)
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc):  # libxml2's own bound (256) met before ours: the same refusal
            raise ArchiveError("too_deep", f"the {what} file nests elements deeper than {limits.max_depth} "
                               "levels") from None
        raise ArchiveError("not_well_formed", f"the {what} file is not well-formed XML: {exc}") from None
    if root is None:
        raise ArchiveError("not_well_formed", f"the {what} file holds no XML element")
    _check_doctype(root.getroottree(), what)
    _check_tree(root, limits, what)
    if removed:
        _report_removed(text, root, removed, warn)
    return root


_DOCTYPE = re.compile(r"<!DOCTYPE\s+[^\s\[>]+\s*(SYSTEM|PUBLIC)?", re.IGNORECASE)
_ENTITY_DECL = re.compile(r"<!ENTITY\s+(%\s+)?([^\s>]+)(\s+(SYSTEM|PUBLIC))?", re.IGNORECASE)


def _scan_doctype(text: str, what: str) -> None:
    """Refuse external references and entity declarations before the parser sees them (it then never tries to)."""
    doctype = _DOCTYPE.search(text, 0, 4096)
    if doctype is None:
        return
    if doctype.group(1):
        raise ArchiveError("xml_external_reference", f"the {what} file refers to an external document type "
                           f"({doctype.group(0)[:100]!r}); external references are not read")
    entity = _ENTITY_DECL.search(text)
    if entity is not None:
        if entity.group(4):
            raise ArchiveError("xml_external_reference", f"the {what} file declares the external entity "
                               f"{entity.group(2)[:60]!r}; external references are not read")
        raise ArchiveError("xml_entities", f"the {what} file declares the entity {entity.group(2)[:60]!r} in its "
                           "document type; entity declarations are refused (they can expand without bound)")


def _check_doctype(tree: etree._ElementTree, what: str) -> None:
    info = tree.docinfo
    if info.system_url or info.public_id:
        raise ArchiveError("xml_external_reference", f"the {what} file refers to an external document type "
                           f"({(info.system_url or info.public_id)[:100]!r}); external references are not read")
    dtd = info.internalDTD
    if dtd is not None:
        for entity in dtd.iterentities():
            if entity.system_url:
                raise ArchiveError("xml_external_reference", f"the {what} file declares the external entity "
                                   f"{entity.name!r} ({entity.system_url[:100]!r}); external references are not read")
        if any(True for _ in dtd.iterentities()):
            raise ArchiveError("xml_entities", f"the {what} file declares entities in its document type; entity "
                               "declarations are refused (they can expand without bound)")


def _walk(root: Any, children: Callable[[Any], Iterable[Any]], limits: ScheduleLimits, what: str, *, units: str,
          nests: str) -> Iterator[Any]:
    """Every node of a tree, depth first, each yielded before its children are taken; more than
    ``limits.max_elements`` nodes or ``limits.max_depth`` levels are refused."""
    count = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_elements:
            raise ArchiveError("too_many_elements", f"the {what} file holds more than {limits.max_elements} {units}")
        if depth > limits.max_depth:
            raise ArchiveError("too_deep", f"the {what} file {nests} deeper than {limits.max_depth} levels")
        yield node
        stack.extend((child, depth + 1) for child in children(node))


def _check_tree(root: etree._Element, limits: ScheduleLimits, what: str) -> None:
    for element in _walk(root, iter, limits, what, units="elements", nests="nests elements"):
        if isinstance(element, etree._Entity):
            raise ArchiveError("xml_entities", f"the {what} file uses the undeclared entity &{element.name};")
        for text in (element.text, element.tail):
            if text is not None and len(text) > limits.max_string_chars:
                raise ArchiveError("text_too_long", f"the {what} file holds a text of {len(text)} characters, more "
                                   f"than the limit of {limits.max_string_chars}")


# Markup as far as telling which element a character was in needs: comments, CDATA, PIs, declarations, tags.
_MARKUP = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>|<![^>]*>|<(/?)([A-Za-z_][\w.:-]*)([^>]*?)(/?)>", re.S)
_ID_ATTR = re.compile(r"""\bid\s*=\s*["']([^"']*)["']""")


def _report_removed(text: str, root: etree._Element, removed: list[tuple[int, str]], warn: Warn) -> None:
    """One warning per element that lost characters, naming it by tag and the nearest ``id`` up its ancestors
    (walked over the markup: one-line files put every element on line 1)."""
    del root
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    found: dict[tuple[int, str], tuple[str, str | None, int, list[str]]] = {}
    stack: list[tuple[str, str | None]] = []
    pending = sorted(removed)
    index = 0
    element_start = 0
    for markup in _MARKUP.finditer(text):
        while index < len(pending) and pending[index][0] < markup.end():
            offset, char = pending[index]
            index += 1
            inside = offset >= markup.start() and markup.group(2) and not markup.group(1)
            current = (markup.group(2), _id(markup.group(3))) if inside else (stack[-1] if stack else ("?", None))
            chain = ([current] + stack[::-1]) if inside else stack[::-1]
            owner = next(((tag, id_) for tag, id_ in chain if id_ is not None), None)
            key = (element_start if not inside else markup.start(), current[0])
            entry = found.setdefault(key, (current[0], owner[1] if owner else None,
                                           bisect.bisect_right(line_starts, offset), []))
            entry[3].append(f"U+{ord(char):04X}")
            parent = chain[1] if len(chain) > 1 else None
            if ">" not in entry[0]:
                if owner is not None and owner != current:
                    found[key] = (f"{current[0]}> of <{owner[0]} id={owner[1]!r}", owner[1], entry[2], entry[3])
                elif owner is None and parent is not None:
                    found[key] = (f"{current[0]}> in <{parent[0]}", None, entry[2], entry[3])
        if markup.group(2):
            if markup.group(1):
                if stack:
                    stack.pop()
            elif not markup.group(4):
                stack.append((markup.group(2), _id(markup.group(3))))
            element_start = markup.end()
    for _key, (where, owner_id, line, chars) in found.items():
        warn("control_characters_removed", f"<{where}> (line {line}) held {len(chars)} character(s) XML 1.0 "
             f"forbids ({', '.join(sorted(set(chars)))}); removed", file="sessions" if owner_id else None,
             record_id=owner_id, field=where.split(">", 1)[0])


def _id(attributes: str) -> str | None:
    match = _ID_ATTR.search(attributes or "")
    return match.group(1) if match else None


def parse_json(data: bytes, limits: ScheduleLimits, what: str = "JSON") -> Any:
    check_size(data, limits, what)
    text = decode_text(data, what)
    try:
        value = json.loads(text)
    except RecursionError:
        raise ArchiveError("too_deep", f"the {what} file nests deeper than the parser allows") from None
    except ValueError as exc:
        raise ArchiveError("not_json", f"the {what} file is not valid JSON: {exc}") from None
    _check_json(value, limits, what)
    return value


def _json_children(item: Any) -> Iterable[Any]:
    if isinstance(item, dict):
        return item.values()
    return item if isinstance(item, list) else ()


def _check_json(value: Any, limits: ScheduleLimits, what: str) -> None:
    for item in _walk(value, _json_children, limits, what, units="values", nests="nests"):
        if isinstance(item, str):
            if len(item) > limits.max_string_chars:
                raise ArchiveError("text_too_long", f"the {what} file holds a string of {len(item)} characters, "
                                   f"more than the limit of {limits.max_string_chars}")
        elif isinstance(item, dict) and any(len(key) > limits.max_string_chars for key in item):
            raise ArchiveError("text_too_long", f"the {what} file holds a key longer than the limit")
