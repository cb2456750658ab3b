"""A lease per task: one run works on a task at a time, and a task that keeps losing its worker stops.

Delivery is at least once (docs/architecture.md fact 1): a worker cut off from the broker keeps running while its
request is delivered again. Each run therefore takes the task's lease (a ``job_leases`` row) before doing anything:

- no row: the run inserts it and works (delivery 1);
- held by a live run (not expired): the run waits, polling, until the holder finishes (then it acks and does
  nothing: the holder published the outcome) or its lease expires;
- expired (the holder died: ``kill -9``, a lost machine, a hub blocked for longer than the lease), or held by a
  process of this host that no longer exists: the run takes it over and counts one more delivery; past
  ``max_deliveries`` it gets ``EXHAUSTED`` and must end the task FAILURE instead of working (a poison message);
- finished (``done``): the run acks and does nothing;
- handed back (``release``: a draining worker stopped at its deadline): expired at once and not counted, so the
  next delivery takes it over immediately.

The holder renews the lease from a green thread while working (``keep``), checks it inside its write transaction
(``holds(conn)``: on PostgreSQL the row lock fences out a takeover until the commit, on SQLite the write lock does),
saves the outcome it reached in the row while still holding it (``record``), publishes it, and then marks the lease
done (``finish``). A run that lost its lease publishes nothing: the run that took over owns the outcome. A run that
takes over a lease with an outcome saved (the holder died between saving and finishing: it may have published)
publishes that outcome again, the same event, instead of working again: two runs of one task never report two
different outcomes (an export rerun writes different bytes: media members in the order their fetches ended).

SQLite: lease writes never use sqlite's own busy wait (it blocks the whole process, including the transaction
holding the lock, docs/architecture.md fact 4); they retry green.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared.models.base import utcnow
from shared.models.jobs import JobLease

log = logging.getLogger(__name__)

ACQUIRED, DONE, EXHAUSTED = "acquired", "done", "exhausted"
RUNNING, FINISHED = "running", "done"
SQLITE_BUSY_TIMEOUT_MS = 30000  # what shared.db's connections use otherwise, restored after each lease write
LOCK_WAIT = 300.0  # seconds a lease write waits for SQLite's write lock (a long import transaction may hold it)
_LEASES = JobLease.__table__


def new_owner() -> str:
    """This run's name in the lease: host, process and a random part (two runs of one process differ)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """Whether ``owner`` ran in a process of this host that no longer exists (``kill -9``, a crash): then its lease
    need not run out first. Anything uncertain (another host, a reused pid) counts as alive: the expiry decides."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname()[:32] or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class LeaseLost(Exception):
    """Another run took the task over (this run was presumed dead): stand down, publish nothing."""


class Lease:
    """The lease of one task for one run. ``pause`` must be green (``eventlet.sleep``) in a service."""

    def __init__(self, db: sessionmaker[Session], task_id: str, kind: str, *, ttl: float,
                 pause: Callable[[float], None] = time.sleep, owner: str | None = None) -> None:
        self.db, self.task_id, self.kind, self.ttl, self.pause = db, task_id, kind, ttl, pause
        self.owner = owner or new_owner()
        self.deliveries = 0
        self.lost = False
        self.outcome: dict[str, Any] | None = None  # saved by an earlier run of the task that died before finishing

    # ------------------------------------------------------------------------------------------------ claiming

    def acquire(self, max_deliveries: int, poll: float | None = None) -> str:
        """Take the lease, waiting while a live run holds it: ``ACQUIRED`` (work), ``DONE`` (another run finished
        the task: do nothing) or ``EXHAUSTED`` (the lease is ours, but the task lost its worker too often)."""
        poll = poll if poll is not None else min(2.0, self.ttl / 4)
        waited = False
        while True:
            outcome = self._claim(max_deliveries)
            if outcome is not None:
                if waited:
                    log.info("task %s: waited for the run holding it, now %s", self.task_id, outcome)
                return outcome
            if not waited:
                log.info("task %s is being worked on by another run: waiting for it", self.task_id)
                waited = True
            self.pause(poll)

    def _claim(self, max_deliveries: int) -> str | None:
        def attempt(conn: Connection) -> str | None:
            now = utcnow()
            row = conn.execute(sa.select(_LEASES).where(_LEASES.c.task_id == self.task_id)).first()
            if row is None:
                conn.execute(sa.insert(_LEASES).values(
                    task_id=self.task_id, kind=self.kind, owner=self.owner, state=RUNNING, deliveries=1,
                    expires_at=self._expiry(now), created_at=now, updated_at=now))
                self.deliveries = 1
                return ACQUIRED
            if row.state == FINISHED:
                return DONE
            mine = row.owner == self.owner
            dead = not mine and owner_is_dead(row.owner)
            if not mine and not dead and row.expires_at > now:
                return None  # a live run holds it
            deliveries = row.deliveries + (0 if mine else 1)
            # Conditional on what was read, and on the expiry again (on PostgreSQL the holder's write transaction
            # may have renewed it while this statement waited for the row): of two runs taking over, one wins.
            condition = [_LEASES.c.task_id == self.task_id, _LEASES.c.owner == row.owner,
                         _LEASES.c.state == RUNNING, _LEASES.c.deliveries == row.deliveries]
            if not mine and not dead:
                condition.append(_LEASES.c.expires_at <= now)
            won = conn.execute(
                sa.update(_LEASES).where(*condition)
                .values(owner=self.owner, deliveries=deliveries, expires_at=self._expiry(now), updated_at=now)
            ).rowcount
            if not won:
                return None
            self.deliveries = deliveries
            self.outcome = row.outcome
            if row.owner != self.owner:
                log.warning("task %s: took over the lease of %s (delivery %d)", self.task_id, row.owner, deliveries)
            return EXHAUSTED if deliveries > max_deliveries else ACQUIRED

        try:
            return self._write(attempt)
        except IntegrityError:
            return None  # another run inserted the row first: read it on the next poll

    # ------------------------------------------------------------------------------------------------- holding

    def renew(self) -> bool:
        """Extend the lease; False (and ``lost`` set) when another run took it over."""
        held = self._write(self.holds)
        if not held:
            self.lost = True
        return held

    def holds(self, conn: Connection | None = None) -> bool:
        """Whether this run still holds the lease, extending it. Given the caller's connection, inside its write
        transaction: the row stays locked until that commits, so no other run can take over before it."""
        if conn is None:
            return self.renew()
        held = self._extend(conn)
        if not held:
            self.lost = True
        return held

    def check(self, conn: Connection | None = None) -> None:
        """``holds``, raising ``LeaseLost`` when another run took over."""
        if not self.holds(conn):
            raise LeaseLost(f"task {self.task_id}: another run took the lease over")

    def record(self, outcome: dict[str, Any]) -> bool:
        """Save the outcome this run reached, if it still holds the lease (extending it); ``False`` (and ``lost``
        set) when another run took over. Saved before it is published: a run taking over publishes it again."""
        held = self._write(lambda conn: self._extend(conn, outcome=outcome))
        if held:
            self.outcome = outcome
        else:
            self.lost = True
        return held

    def _extend(self, conn: Connection, **values: Any) -> bool:
        """One conditional UPDATE: the lease extended (and ``values`` set) only while this run holds it."""
        now = utcnow()
        return conn.execute(
            sa.update(_LEASES)
            .where(_LEASES.c.task_id == self.task_id, _LEASES.c.owner == self.owner, _LEASES.c.state == RUNNING)
            .values(expires_at=self._expiry(now), updated_at=now, **values)
        ).rowcount == 1

    def finish(self) -> None:
        """The outcome is published: later deliveries of the request do nothing."""
        def mark(conn: Connection) -> None:
            conn.execute(sa.update(_LEASES)
                         .where(_LEASES.c.task_id == self.task_id, _LEASES.c.owner == self.owner)
                         .values(state=FINISHED, updated_at=utcnow()))
        self._write(mark)

    @contextmanager
    def keep(self, spawn: Callable[..., Any]) -> Iterator[Lease]:
        """Renew the lease every third of its lifetime from a green thread (``eventlet.spawn``) while the block runs."""
        stop = [False]

        def renew_forever() -> None:
            while not stop[0]:
                self.pause(self.ttl / 3)
                if stop[0]:
                    return
                try:
                    if not self.renew():
                        log.warning("task %s: lost the lease to another run", self.task_id)
                        return
                except Exception:  # the database briefly unreachable: the next round tries again
                    log.warning("task %s: could not renew the lease", self.task_id, exc_info=True)

        thread = spawn(renew_forever)
        try:
            yield self
        finally:
            stop[0] = True
            kill = getattr(thread, "kill", None)
            if kill is not None:
                kill()

    def release(self) -> None:
        """Hand the task back unfinished (a draining worker past its deadline, ``shared/drain.py``): the lease
        expires now, so the next delivery takes it over at once, and this run is not counted as a lost worker."""
        def hand_back(conn: Connection) -> None:
            now = utcnow()
            conn.execute(sa.update(_LEASES)
                         .where(_LEASES.c.task_id == self.task_id, _LEASES.c.owner == self.owner,
                                _LEASES.c.state == RUNNING)
                         .values(expires_at=now, deliveries=_LEASES.c.deliveries - 1, updated_at=now))

        self._write(hand_back)

    # ---------------------------------------------------------------------------------------------- internals

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.ttl)

    def _write(self, fn: Callable[[Connection], Any]) -> Any:
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.01
        while True:
            with self.db() as session:
                conn = session.connection()
                sqlite = conn.dialect.name == "sqlite"
                if sqlite:
                    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
                try:
                    try:
                        result = fn(conn)
                    finally:
                        if sqlite:  # restored while the connection is still ours (commit releases it)
                            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                    session.commit()
                    return result
                except OperationalError as exc:
                    session.rollback()
                    if not sqlite or ("locked" not in str(exc.orig) and "busy" not in str(exc.orig)) \
                            or time.monotonic() > deadline:
                        raise
            self.pause(delay)
            delay = min(delay * 2, 0.2)
