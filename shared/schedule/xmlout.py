"""Small helpers to write XML as text, escaped and cleaned (writers stream strings rather than build trees)."""

from __future__ import annotations

from typing import Any

from shared.schedule.xmltext import escape_attr, escape_text

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def attrs(values: dict[str, Any]) -> str:
    """`` name="value"`` pairs, ``None`` values left out."""
    return "".join(f' {name}="{escape_attr(value)}"' for name, value in values.items() if value is not None)


def element(tag: str, content: Any = "", indent: str = "", /, **attributes: Any) -> str:
    """One element on its own line: ``<tag a="..">text</tag>`` (text escaped)."""
    return f"{indent}<{tag}{attrs(attributes)}>{escape_text(content)}</{tag}>\n"


def optional(tag: str, content: Any, indent: str = "") -> str:
    """``element`` when ``content`` is not ``None``, else nothing."""
    return "" if content is None else element(tag, content, indent)
