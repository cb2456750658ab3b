"""Sampling profiles of a running service with py-spy (``pip install py-spy``; not a dependency of the project).

``Recording(pid, path)`` samples the process tree of ``pid`` while the block runs and leaves py-spy's raw format
(one line per distinct stack: ``frame;frame;... count``) in ``path``; ``summary(path, within)`` turns it into the
functions taking the most time, by own time and including callees, over the samples whose stack contains
``within`` (e.g. ``run_import``: what one import job spends, not the idle service).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

RATE = 100  # samples per second


def executable() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


class Recording:
    def __init__(self, pid: int, path: Path, rate: int = RATE) -> None:
        self.pid, self.path, self.rate = pid, path, rate
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Recording:
        spy = executable()
        if spy is None:
            raise SystemExit("py-spy not found (pip install py-spy, or set PY_SPY)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--subprocesses", "--rate", str(self.rate), "--format", "raw",
             "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        _, err = self._proc.communicate(timeout=60)
        if not self.path.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def _frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def summary(path: Path, within: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";")]
        if not count.isdigit() or not any(within in f for f in frames):
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return f"no samples inside {within}"
    lines = [f"{total} samples ({total / RATE:.1f} s at {RATE} Hz) inside {within}", "own time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("including callees:")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)
