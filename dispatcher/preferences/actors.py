"""Dramatiq actors on the "residents" queue: the main application's changes and SendGrid's feedback.

Each actor is a thin shell over :mod:`dispatcher.preferences.updates` or
:mod:`dispatcher.preferences.feedback`, all idempotent and ordered by version, so at-least-once
delivery is harmless.

Privacy. The main application's messages must carry what changed (a new location, email or token):
that is its inbound message, and we never copy any of it into a message, a log line or a dead letter
of ours:

* failures raise :class:`ResidentUpdateFailed` naming the actor, resident id, version and the class of
  the error, chained ``from None``, so the traceback dramatiq keeps with a retried message holds no
  values (a database error's DETAIL would quote the row);
* dramatiq's worker logs a failed message with its arguments; :class:`RedactMessageArguments` replaces
  the message by ``actor#message_id`` in those log lines;
* these actors never reach the dead-letter queue, where the arguments would sit readable for a week:
  an unreachable database is retried for as long as it takes (backoff capped at ten minutes), a change
  for a resident not created yet is retried for about a day, a malformed change is dropped at once,
  and any other failure a few times; a dropped change is logged with its ids so the main application
  can send it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
import psycopg_pool
from dramatiq.middleware import CurrentMessage

from dispatcher.broker import get_engine_broker
from dispatcher.db import get_pool
from dispatcher.errors import InvalidResidentUpdate, ResidentUpdateFailed, UnknownResident
from dispatcher.preferences import feedback, updates
from dispatcher.queues import RESIDENTS_QUEUE

logger = logging.getLogger(__name__)

get_engine_broker()  # installed before the actors below bind to it

#: Longest wait between two attempts of a resident change (ms).
MAX_BACKOFF_MS = 600_000
#: Attempts for a change that names a resident not created yet (about a day with capped backoff).
UNKNOWN_RESIDENT_ATTEMPTS = 150
#: Attempts for any other unexpected failure before the change is dropped (logged by id).
OTHER_FAILURE_ATTEMPTS = 5
#: Dramatiq's loggers that print a message, arguments included.
_MESSAGE_LOGGERS = (
    "dramatiq.worker.WorkerThread",
    f"dramatiq.worker.ConsumerThread({RESIDENTS_QUEUE})",
    f"dramatiq.worker.ConsumerThread({RESIDENTS_QUEUE}.DQ)",
)
_TRANSIENT = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


class RedactMessageArguments(logging.Filter):
    """Log a dramatiq message as ``actor#message_id``, never with its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, _MESSAGE_TYPES) for a in record.args):
            record.args = tuple(
                f"{a.actor_name}#{a.message_id}" if isinstance(a, _MESSAGE_TYPES) else a for a in record.args
            )
        return True


_MESSAGE_TYPES = (dramatiq.Message, dramatiq.MessageProxy)


def install_log_redaction() -> None:
    """Attach :class:`RedactMessageArguments` to dramatiq's message-printing loggers (idempotent)."""
    for name in _MESSAGE_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactMessageArguments) for f in target.filters):
            target.addFilter(RedactMessageArguments())


install_log_redaction()


def _attempt() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _attempt_limit(error: Exception) -> int | None:
    if isinstance(error, _TRANSIENT):
        return None
    if isinstance(error, UnknownResident):
        return UNKNOWN_RESIDENT_ATTEMPTS
    return OTHER_FAILURE_ATTEMPTS


def _apply(action: str, resident_id: int, version: int, change: Callable[[psycopg.Connection[Any]], bool]) -> None:
    """Run one change in a pooled connection; turn every failure into a value-free one (see module doc)."""
    try:
        with get_pool().connection() as conn:
            applied = change(conn)
    except InvalidResidentUpdate as problem:
        logger.error("%s for resident %s version %s dropped: %s", action, resident_id, version, problem)
        return
    except Exception as error:
        limit = _attempt_limit(error)
        attempt = _attempt() + 1
        if limit is not None and attempt >= limit:
            logger.error("%s for resident %s version %s dropped after %d attempts: %s",
                         action, resident_id, version, attempt, type(error).__name__)
            return
        raise ResidentUpdateFailed(
            f"{action} for resident {resident_id} version {version} failed: {type(error).__name__}"
        ) from None
    logger.debug("%s for resident %s version %s %s", action, resident_id, version,
                 "applied" if applied else "ignored (replay or older)")


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def resident_upserted(
    resident_id: int,
    version: int,
    lat: float,
    lng: float,
    email: str | None = None,
    locale: str = "en-US",
    time_zone: str = "UTC",
    has_camera: bool = False,
) -> None:
    """A resident was created, moved or otherwise changed in the main application."""
    _apply("resident_upserted", resident_id, version, lambda conn: updates.upsert_resident(
        conn, resident_id, version=version, lat=lat, lng=lng, email=email, locale=locale,
        time_zone=time_zone, has_camera=has_camera))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def resident_deleted(resident_id: int, version: int) -> None:
    """A resident left: personal data removed, pending deliveries skipped."""
    _apply("resident_deleted", resident_id, version,
           lambda conn: updates.delete_resident(conn, resident_id, version=version))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def settings_changed(
    resident_id: int,
    version: int,
    community_requests: bool | None = None,
    push: bool | None = None,
    email: bool | None = None,
) -> None:
    """A resident switched Community Requests, push or email on or off (``None``: unchanged)."""
    _apply("settings_changed", resident_id, version, lambda conn: updates.change_settings(
        conn, resident_id, version=version, community_requests=community_requests, push=push, email=email))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def token_registered(resident_id: int, version: int, token: str) -> None:
    """A resident's device registered for push."""
    _apply("token_registered", resident_id, version,
           lambda conn: updates.register_token(conn, resident_id, token, version=version))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def token_removed(resident_id: int, version: int, token: str) -> None:
    """A resident's device signed out."""
    _apply("token_removed", resident_id, version,
           lambda conn: updates.remove_token(conn, resident_id, token, version=version))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=None, max_backoff=MAX_BACKOFF_MS)
def email_changed(resident_id: int, version: int, email: str | None) -> None:
    """A resident's email address changed (``None``: removed)."""
    _apply("email_changed", resident_id, version,
           lambda conn: updates.change_email(conn, resident_id, version=version, email=email))


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=20, max_backoff=MAX_BACKOFF_MS)
def sendgrid_events(batch_id: str) -> None:
    """Apply one stored batch of SendGrid events (the message carries the batch id only)."""
    with get_pool().connection() as conn:
        suppressed = feedback.apply_webhook_events(conn, batch_id)
    logger.info("sendgrid event batch %s applied: %d addresses newly suppressed", batch_id, suppressed)
