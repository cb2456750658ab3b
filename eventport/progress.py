"""Progress for people: a task's ``progress`` {stage, done, total, phase} and byte transfers as ``rich`` bars on a
terminal; nothing at all when output is piped, with ``--json`` or ``--quiet``. The formatting is plain functions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*(?:/s)?\s*$", re.I)


def human_bytes(size: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``None`` -> ``"?"``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_rate(text: str) -> int:
    """A rate as ``curl --limit-rate`` takes it, in bytes per second: ``"500"``, ``"200k"``, ``"1.5M"``, ``"1g"``."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (examples: 500, 200k, 1.5M)")
    rate = float(match.group(1)) * 1024 ** " kmg".index((match.group(2) or " ").lower())
    if rate < 1:
        raise ValueError(f"rate must be at least 1 byte per second: {text!r}")
    return int(rate)


def task_step(task: dict[str, Any]) -> tuple[str, int | None, int | None]:
    """What a bar shows for a task view: a label, and ``done``/``total`` (``None``: not known yet).

    ``queued`` and ``started`` have no numbers; ``progress`` has ``stage`` (what is being written or read: a
    record type, ``media``, an archive file) and, for imports, ``phase`` (download, index, validate, media, database).
    """
    kind = task.get("kind") or "task"
    if task.get("state") in ("SUCCESS", "FAILURE"):
        return f"{kind} {task['state'].lower()}", None, None
    progress = task.get("progress") or {}
    if task.get("status") != "progress" or not progress:
        return f"{kind} {task.get('status') or 'waiting'}", None, None
    parts = [kind]
    for key in ("phase", "stage"):
        value = progress.get(key)
        if isinstance(value, str) and value and value not in parts:
            parts.append(value)
    done = progress.get("done")
    total = progress.get("total")
    done = done if isinstance(done, int) and not isinstance(done, bool) and done >= 0 else None
    total = total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None
    if done is not None and total is not None:
        done = min(done, total)
    return " · ".join(parts), done, total


def count_text(task: dict[str, Any]) -> str:
    """The numbers beside the bar: ``"120/500"``, ``"120"`` without a total, bytes for an import's download phase
    (``"1.5 MiB / 4.4 MiB"``), ``""`` before any."""
    _, done, total = task_step(task)
    if done is None:
        return ""
    if (task.get("progress") or {}).get("phase") == "download":
        return human_bytes(done) + (f" / {human_bytes(total)}" if total is not None else "")
    return f"{done}/{total}" if total is not None else str(done)


def step_text(task: dict[str, Any]) -> str:
    """The one-line form of ``task_step``, for logs: ``"export · sessions 120/500"``."""
    label = task_step(task)[0]
    count = count_text(task)
    return f"{label} {count}" if count else label


class TaskBar(Protocol):
    def show(self, task: dict[str, Any]) -> None: ...


class ByteBar(Protocol):
    def advance(self, size: int) -> None: ...


class _Quiet:
    def show(self, task: dict[str, Any]) -> None:
        pass

    def advance(self, size: int) -> None:
        pass


class _RichTask:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.id = progress.add_task("waiting", total=None, count="")

    def show(self, task: dict[str, Any]) -> None:
        label, done, total = task_step(task)
        count = count_text(task)
        if task.get("state") == "SUCCESS":  # a full bar, whatever the last progress report said
            self.progress.update(self.id, description=label, total=1, completed=1, count=count)
        elif total is None:
            self.progress.update(self.id, description=label, total=None, completed=done or 0, count=count)
        else:
            self.progress.update(self.id, description=label, total=total, completed=done, count=count)


class _RichBytes:
    def __init__(self, progress: Progress, description: str, total: int | None, initial: int) -> None:
        self.progress = progress
        self.id = progress.add_task(description, total=total, completed=initial)

    def advance(self, size: int) -> None:
        self.progress.advance(self.id, size)


class Reporter:
    """Bars and notes on stderr. ``bars``: whether to draw bars; ``notes``: whether to print informational lines."""

    def __init__(self, bars: bool, notes: bool, console: Console | None = None) -> None:
        self.bars = bars
        self.notes = notes
        self.console = console or Console(stderr=True, highlight=False)

    def note(self, text: str) -> None:
        if self.notes:
            self.console.print(text, markup=False, soft_wrap=True)

    @contextmanager
    def task(self) -> Iterator[TaskBar]:
        if not self.bars:
            yield _Quiet()
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=self.console) as progress:
            yield _RichTask(progress)

    @contextmanager
    def transfer(self, description: str, total: int | None, initial: int = 0) -> Iterator[ByteBar]:
        if not self.bars:
            yield _Quiet()
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=self.console) as progress:
            yield _RichBytes(progress, description, total, initial)
