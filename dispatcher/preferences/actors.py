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
  the message by ``actor#message_id`` in those log lines, and :class:`RedactCallArguments` removes the
  arguments from the debug line each actor logs per call;
* these actors never reach the dead-letter queue, where the arguments would sit readable for a week:
  every change is retried a bounded number of times and then dropped by the actor itself (an
  unreachable database for about a day and a half, backoff capped at ten minutes; a resident not
  created yet for about a day; any other failure a few times), a malformed change is dropped at once,
  and a dropped change is logged with its ids (never a value) so the main application can send it
  again. dramatiq's own ``max_retries`` is set above the actor's limit, as a backstop never reached;
* a message whose shape does not match its actor (a field missing, an extra positional value) is
  refused at once and logged by field names: it is acked, not retried, so it stays nowhere. A keyword
  field the engine does not know is accepted and ignored (its name is logged, not its value), so the
  main application can add fields before the engine reads them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
import psycopg_pool
from dramatiq.middleware import CurrentMessage

from dispatcher.broker import get_engine_broker
from dispatcher.db import get_pool
from dispatcher.db.types import Conn
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
#: Attempts while the database is unreachable (about a day and a half with capped backoff).
TRANSIENT_ATTEMPTS = 200
#: dramatiq's retry limit for these actors: above every limit above, so dramatiq never dead-letters one.
MAX_RETRIES = TRANSIENT_ATTEMPTS + 1
#: Longest field name logged as such; longer or odd names are logged as a count only.
_MAX_LOGGED_NAME = 40
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


class RedactCallArguments(logging.Filter):
    """dramatiq's actor logs every call's arguments ("Received args=... kwargs=..."): keep the line, not them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and str(record.msg).startswith("Received args="):
            record.msg, record.args = "Received a message (arguments not logged).", ()
        return True


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


def _attempt_limit(error: Exception) -> int:
    if isinstance(error, _TRANSIENT):
        return TRANSIENT_ATTEMPTS
    if isinstance(error, UnknownResident):
        return UNKNOWN_RESIDENT_ATTEMPTS
    return OTHER_FAILURE_ATTEMPTS


def _number(value: object) -> str:
    """An id or version for a log line: the number, never whatever else a malformed message put there."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "(not an integer)"


def _names(names: list[str]) -> str:
    shown = [n for n in names if n.isidentifier() and len(n) <= _MAX_LOGGED_NAME]
    hidden = len(names) - len(shown)
    return ", ".join(shown + ([f"{hidden} more"] if hidden else [])) or "none"


def _apply(action: str, resident_id: int, version: int, change: Callable[[Conn], bool]) -> None:
    """Run one change in a pooled connection; turn every failure into a value-free one (see module doc)."""
    ids = f"resident {_number(resident_id)} version {_number(version)}"
    try:
        with get_pool().connection() as conn:
            applied = change(conn)
    except InvalidResidentUpdate as problem:
        logger.error("%s for %s dropped: %s", action, ids, problem)
        return
    except Exception as error:
        limit = _attempt_limit(error)
        attempt = _attempt() + 1
        if attempt >= limit:
            logger.error("%s for %s dropped after %d attempts: %s", action, ids, attempt, type(error).__name__)
            return
        raise ResidentUpdateFailed(
            f"{action} for {ids} failed: {type(error).__name__}"
        ) from None
    logger.debug("%s for %s %s", action, ids, "applied" if applied else "ignored (replay or older)")


def resident_actor(fn: Callable[..., None]) -> dramatiq.Actor[..., None]:
    """Declare ``fn`` on the residents queue, guarded against messages that do not fit it (module doc)."""
    signature = inspect.signature(fn)
    known = signature.parameters

    @functools.wraps(fn)
    def guarded(*args: Any, **fields: Any) -> None:
        unknown = sorted(name for name in fields if name not in known)
        if unknown:
            logger.warning("%s: ignored fields the engine does not know: %s", fn.__name__, _names(unknown))
            fields = {name: value for name, value in fields.items() if name in known}
        try:
            bound = signature.bind(*args, **fields)
        except TypeError:
            logger.error("%s message refused: %d positional values and fields %s do not match its fields %s",
                         fn.__name__, len(args), _names(sorted(fields)), ", ".join(known))
            return
        fn(*bound.args, **bound.kwargs)

    declare = dramatiq.actor(actor_name=fn.__name__, queue_name=RESIDENTS_QUEUE, max_retries=MAX_RETRIES,
                             max_backoff=MAX_BACKOFF_MS)
    declared = declare(guarded)
    declared.logger.addFilter(RedactCallArguments())
    return declared


@resident_actor
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


@resident_actor
def resident_deleted(resident_id: int, version: int) -> None:
    """A resident left: personal data removed, pending deliveries skipped."""
    _apply("resident_deleted", resident_id, version,
           lambda conn: updates.delete_resident(conn, resident_id, version=version))


@resident_actor
def settings_changed(
    resident_id: int,
    version: int,
    community_requests: bool | None = None,
    push: bool | None = None,
    email: bool | None = None,
    quiet_hours: bool | None = None,
    quiet_start: str | None = None,
    quiet_end: str | None = None,
) -> None:
    """A resident switched Community Requests, push, email or quiet hours, or moved their quiet hours
    (``"HH:MM"``); ``None``: unchanged."""
    _apply("settings_changed", resident_id, version, lambda conn: updates.change_settings(
        conn, resident_id, version=version, community_requests=community_requests, push=push, email=email,
        quiet_hours=quiet_hours, quiet_start=quiet_start, quiet_end=quiet_end))


@resident_actor
def token_registered(resident_id: int, version: int, token: str) -> None:
    """A resident's device registered for push."""
    _apply("token_registered", resident_id, version,
           lambda conn: updates.register_token(conn, resident_id, token, version=version))


@resident_actor
def token_removed(resident_id: int, version: int, token: str) -> None:
    """A resident's device signed out."""
    _apply("token_removed", resident_id, version,
           lambda conn: updates.remove_token(conn, resident_id, token, version=version))


@resident_actor
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


@resident_actor
def kind_settings_changed(
    resident_id: int,
    version: int,
    video_requests: bool | None = None,
    safety_alerts: bool | None = None,
    announcements: bool | None = None,
) -> None:
    """A resident switched video requests, safety alerts or agency announcements on or off (``None``: unchanged)."""
    _apply("kind_settings_changed", resident_id, version, lambda conn: updates.change_kind_settings(
        conn, resident_id, version=version, video_requests=video_requests, safety_alerts=safety_alerts,
        announcements=announcements))
