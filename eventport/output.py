"""What commands print on stdout: one JSON document with ``--json``, else tables and short lines for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


class Output:
    def __init__(self, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or Console(highlight=False, soft_wrap=True)

    def document(self, value: Any) -> None:
        """The ``--json`` answer: exactly one JSON document on stdout."""
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], empty: str) -> None:
        """``columns``: (header, key) pairs; a missing value prints as ``-``."""
        if not rows:
            self.line(empty)
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for header, _ in columns:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(cell(row.get(key)) for _, key in columns))
        self.console.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            if value is not None:
                self.line(f"{name.ljust(width)}  {cell(value)}")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
