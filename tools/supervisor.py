"""Keep a few named child processes running for the run command: report and restart the ones that die, stop all.

Each child runs in a process group of its own, so the terminal's Ctrl-C (SIGINT to the foreground group) reaches only
the run command, which then stops the children once, with SIGTERM, and SIGKILLs whatever is left at a deadline. A
child that gets both signals shuts down twice at once (nameko then prints a traceback per consumer and takes a minute).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Restart delays of one child: ``first`` seconds, doubling up to ``cap``; back to ``first`` once the child has
    run ``stable`` seconds (a crash loop slows down, a rare crash is restarted at once)."""

    first: float = 1.0
    cap: float = 30.0
    stable: float = 30.0
    current: float = 0.0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.stable or self.current == 0.0:
            self.current = self.first
        else:
            self.current = min(self.current * 2, self.cap)
        return self.current


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # set while dead and waiting for its restart
    backoff: Backoff = field(default_factory=Backoff)


def describe_exit(code: int) -> str:
    """``code 1`` or ``code -9 (SIGKILL)``: how the console names an exit."""
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


class Supervisor:
    """Starts children, restarts the dead ones with a backoff (``poll``), stops them all (``stop_all``)."""

    def __init__(self, say: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.children: dict[str, Child] = {}
        self.say = say or (lambda text: print(f"run: {text}", file=sys.stderr, flush=True))
        self.clock = clock

    def add(self, name: str, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.children[name] = Child(name=name, argv=argv, env=env, cwd=cwd)

    def start_all(self) -> None:
        for child in self.children.values():
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        # stdout/stderr: the console; stdin: nothing (a background group reading the terminal would be stopped).
        child.proc = subprocess.Popen(child.argv, env=child.env, cwd=child.cwd, stdin=subprocess.DEVNULL,
                                      process_group=0, preexec_fn=_die_with_parent)
        child.started_at = self.clock()
        child.restart_at = None

    def pid(self, name: str) -> int | None:
        proc = self.children[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def poll(self) -> None:
        """Report children that died since the last call and restart those whose backoff has passed."""
        now = self.clock()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                    self.say(f"{child.name} restarted (pid {child.proc.pid})")
                continue
            code = child.proc.poll() if child.proc is not None else None
            if code is None:
                continue
            delay = child.backoff.next_delay(now - child.started_at)
            child.restart_at = now + delay
            self.say(f"{child.name} (pid {child.proc.pid}) exited with {describe_exit(code)}; "
                     f"restarting in {delay:g} s")

    def stop_all(self, timeout: float = 7.0) -> list[str]:
        """SIGTERM every child's group once, wait up to ``timeout`` seconds, SIGKILL the rest; returns their names."""
        running = {c.name: c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None}
        for proc in running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = self.clock() + timeout
        while any(p.poll() is None for p in running.values()) and self.clock() < deadline:
            time.sleep(0.05)
        killed = [name for name, proc in running.items() if proc.poll() is None]
        for name in killed:
            _signal_group(running[name], signal.SIGKILL)
            running[name].wait()
        for proc in running.values():  # grandchildren (worker pools) go with their service's group
            _signal_group(proc, signal.SIGKILL)
        for child in self.children.values():
            child.restart_at = None
        return killed

    def kill_all(self) -> None:
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is None:
                _signal_group(child.proc, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the run command dies, even by SIGKILL (Linux), so that no service
    outlives it unnoticed (they are out of reach of the terminal's signals)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own group (process_group=0)
    except (ProcessLookupError, PermissionError):
        pass
