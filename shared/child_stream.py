"""A generator run in a forked child process, its items read back here as they come: producing them takes another
core while this process consumes them (the importer builds its rows there while it inserts them here).

The child is a copy of this process at the fork, so the producer sees everything the caller had built (an import's
index, id maps, open archive), and nothing is sent to it. Items come back pickled through a pipe, one frame each;
a full pipe stops the child, so it runs at most a frame or two ahead. What the child costs in memory is what it
touches of the copy: with CPython's reference counts, about everything it reads (for an import, its index: about
40 MB at 50,000 sessions).

The child must never touch what it shares with this process. It does no I/O but reading files and writing its
pipe (with ``posix.write``, never the green ``os.write``: every socket is shared). It gets an eventlet hub of its
own: the copied one's epoll set is the parent's, so a green yield there would run the parent's greenthreads; a
producer may still yield, and then runs only itself. It never returns into the caller's frames and leaves with
``os._exit`` (no atexit handlers, no finalisers: a database connection closed there would close this process's
session). ``gc.freeze`` before the fork keeps the child's collector off every object that existed then. SIGINT and
SIGTERM are ignored there (a drain or a Ctrl-C is this process's to decide), and the child dies with its parent
(``PR_SET_PDEATHSIG``).

Here the pipe is read green when eventlet has patched ``os`` (the hub keeps breathing: heartbeats, other workers).
An exception raised by the producer is raised here, the same one when it pickles (a ``LoadError`` does), else a
``ChildFailed`` with its text; a child that died without a word is a ``ChildFailed`` too. Leaving the iteration
early (an insert failed, the worker was killed) kills the child. Where ``os.fork`` does not exist the generator
runs in this process.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import posix
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_HEADER = 8
_ITEM, _END, _ERROR = 0, 1, 2
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: a frame of a thousand rows in one or two reads
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """The child process failed in a way that cannot be raised here as it was (its text is the message)."""


def available() -> bool:
    return hasattr(os, "fork")


def stream_from_child(produce: Callable[[], Iterable[T]]) -> Iterator[T]:
    """The items of ``produce()``, computed in a forked child, in order."""
    if not available():
        yield from produce()
        return
    read_fd, write_fd = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass  # the default pipe size works, in more reads
    parent = os.getpid()
    gc.freeze()
    try:
        with warnings.catch_warnings():
            # eventlet's "fork() is a bad idea": the child never runs eventlet (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        gc.unfreeze()
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child's coverage is not collected (it leaves with os._exit)
        os.close(read_fd)
        _child(produce, write_fd, parent)
    gc.unfreeze()
    os.close(write_fd)
    child = _Child(pid, read_fd)
    try:
        while True:
            kind, value = pickle.loads(child.read_frame())
            if kind == _ITEM:
                yield value
            elif kind == _END:
                break
            else:
                raise value
    finally:
        child.close()


def _child(produce: Callable[[], Iterable[Any]], fd: int, parent: int) -> None:  # pragma: no cover - child only
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _die_with(parent)
        _own_hub()
        for item in produce():
            _write_frame(fd, pickle.dumps((_ITEM, item), protocol=pickle.HIGHEST_PROTOCOL))
        _write_frame(fd, pickle.dumps((_END, None), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, which decides
        code = 1
        try:
            _write_frame(fd, _error_frame(exc))
        except BaseException:  # noqa: BLE001 - the parent is gone or stopped reading: nobody to tell
            pass
    os._exit(code)


def _own_hub() -> None:  # pragma: no cover - child only
    """A hub of the child's own, empty. The copied one shares its epoll set with the parent: a green yield there (the
    importer pauses every few hundred records for heartbeats) would run the parent's greenthreads in the child."""
    hubs = sys.modules.get("eventlet.hubs")
    if hubs is not None:
        hubs.use_hub()  # drops the copied hub with its timers and listeners


def _die_with(parent: int) -> None:  # pragma: no cover - child only
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a child whose parent died stops at its next write (EPIPE)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was asked for


def _error_frame(exc: BaseException) -> bytes:
    try:
        frame = pickle.dumps((_ERROR, exc), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(frame)  # some exceptions pickle but do not unpickle
        return frame
    except Exception:  # noqa: BLE001 - any exception at all becomes a ChildFailed with its text
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()
        return pickle.dumps((_ERROR, ChildFailed(text)), protocol=pickle.HIGHEST_PROTOCOL)


def _write_frame(fd: int, data: bytes) -> None:  # pragma: no cover - child only
    view = memoryview(len(data).to_bytes(_HEADER, "little") + data)
    while view:
        view = view[posix.write(fd, view):]


class _Child:
    """The parent's end: frames read from the pipe, the child reaped exactly once (killed first if it still runs)."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self.status: int | None = None

    def read_frame(self) -> bytes:
        size = int.from_bytes(self._read_exactly(_HEADER), "little")
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self.fd, min(left, _PIPE_BYTES))  # green where eventlet patched os: waits in the hub
            if not chunk:
                raise ChildFailed(f"the child process {self.pid} ended without finishing ({self._reap()})")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _reap(self) -> str:
        if self.status is None:
            try:
                self.status = os.waitpid(self.pid, 0)[1]  # green where eventlet patched os
            except ChildProcessError:
                self.status = 0
        if os.WIFSIGNALED(self.status):
            return f"killed by signal {os.WTERMSIG(self.status)}"
        return f"exit status {os.WEXITSTATUS(self.status)}"

    def close(self) -> None:
        os.close(self.fd)  # a child still writing gets EPIPE
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)  # harmless once it has exited: not reaped yet, the pid is its own
            except ProcessLookupError:
                pass
            self._reap()
