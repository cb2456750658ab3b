"""The generic part of an outbox table (the mailer's ``mail_deliveries``, the webhooks' ``webhook_deliveries``).

Such a table has ``id``, ``state``, ``attempts``, ``next_attempt_at`` and ``updated_at``. A sender **claims** a due row
with one conditional UPDATE (``attempts + 1``, a lease until ``next_attempt_at``); ``attempts`` right after the claim
is its fencing token, and every later change of that attempt is a **fenced** UPDATE requiring it, so two senders (or a
killed one and its successor) never both record an outcome. What the states mean, and what happens to a row whose
lease ran out, is each owner's business (services/mailer/outbox.py, services/webhooks/outbox.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, select, update
from sqlalchemy.orm import Session


def claim(session: Session, table: Table, row_id: int, *, states: Iterable[str], to_state: str, now: datetime,
          lease: float, read: Iterable[ColumnElement[Any]] = (), **values: Any) -> Row | None:
    """Take a due row in one of ``states`` into ``to_state`` (plus ``values``); the row's ``attempts`` (the token)
    and the ``read`` columns, read inside the claiming transaction; None if another sender has it or it is not due."""
    c = table.c
    result = session.execute(
        update(table)
        .where(c.id == row_id, c.state.in_(tuple(states)), c.next_attempt_at <= now)
        .values(state=to_state, attempts=c.attempts + 1, next_attempt_at=now + timedelta(seconds=lease),
                updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        session.rollback()
        return None
    # The row is locked by our UPDATE until the commit: what we read is our claim's.
    row = session.execute(select(c.attempts, *read).where(c.id == row_id)).one()
    session.commit()
    return row


def fenced(session: Session, table: Table, row_id: int, token: int, states: Iterable[str], **values: Any) -> bool:
    """Change the row only if it is still the claim ``token`` made and in one of ``states``; committed."""
    c = table.c
    return change(session, table, [c.id == row_id, c.attempts == token, c.state.in_(tuple(states))], **values)


def change(session: Session, table: Table, where: list[ColumnElement[bool]], **values: Any) -> bool:
    """One committed conditional UPDATE; True if it changed the row."""
    result = session.execute(update(table).where(*where).values(**values).execution_options(
        synchronize_session=False))
    session.commit()
    return result.rowcount == 1
