"""How a consumer's ``@event_handler`` treats trouble with one incoming event (the mailer and the webhooks service).

A payload that breaks its contract is a producer bug: logged and dropped (redelivering it would fail the same way).
A database error means the event could not even be recorded: after a pause (no hot redelivery loop while the
database is down) it is raised, so a handler declared with ``requeue_on_error=True`` puts the event back in its
queue. Anything else is a bug of ours: logged, not redelivered forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import eventlet
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

DB_ERROR_PAUSE = 2.0  # seconds before an event goes back to its queue because the database is unavailable


def take(kind: str, step: Callable[[], object], log: logging.Logger) -> None:
    """Run ``step`` (recording the ``kind`` event) under the rules above."""
    try:
        step()
    except ValidationError as exc:
        log.error("dropped %s that breaks the contract: %s", kind, exc.messages)
    except SQLAlchemyError:
        log.exception("database unavailable; %s goes back to the queue", kind)
        eventlet.sleep(DB_ERROR_PAUSE)
        raise
    except Exception:
        log.exception("could not handle %s", kind)
