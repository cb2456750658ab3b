"""Text that every schedule format can carry: what XML 1.0 forbids removed.

XML 1.0 allows only TAB, LF, CR and the ranges U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF; a single U+0006
makes a whole schedule.xml unreadable (frab wrote five into KC2015). The same cleaning is applied to every format
so all of them carry the same text; iCal additionally normalises line breaks to LF (``calendar_text``).
"""

from __future__ import annotations

import re
from typing import Any

# Everything outside the XML 1.0 Char production, lone surrogates included, and DEL: XML allows it but iCal does
# not, and every format should carry the same text. (C1 controls stay: both allow them, and mojibake like
# "\u00e2\u0080\u0099" needs them to be repaired later.)
_XML_FORBIDDEN = re.compile("[^\t\n\r\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> str:
    """``value`` as a string safe for XML 1.0 text and attributes (``None`` -> ``""``)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _XML_FORBIDDEN.sub("", text)


def xml_text_or_none(value: Any) -> str | None:
    """Like ``xml_text``, but ``None`` and blank text stay ``None``."""
    if value is None:
        return None
    text = xml_text(value)
    return text if text.strip() else None


_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# In attributes, whitespace characters are escaped too: a parser would normalise them to spaces otherwise.
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;",
                               "\r": "&#13;"})


def escape_text(value: Any) -> str:
    """XML character data for ``value``: cleaned and escaped (``]]>`` cannot survive: ``>`` is always escaped)."""
    return xml_text(value).translate(_TEXT_ESCAPES)


def escape_attr(value: Any) -> str:
    """An attribute value for ``value``, to be written between double quotes."""
    return xml_text(value).translate(_ATTR_ESCAPES)


def forbidden_count(value: str) -> int:
    """How many characters ``xml_text`` would remove (for reports of repaired input)."""
    return len(_XML_FORBIDDEN.findall(value))


def calendar_text(value: Any) -> str:
    """Text for an iCal TEXT value: XML-safe (so no controls but TAB and line breaks), CR/LF normalised to LF."""
    return xml_text(value).replace("\r\n", "\n").replace("\r", "\n")


__all__ = ["calendar_text", "escape_attr", "escape_text", "forbidden_count", "xml_text", "xml_text_or_none"]
