"""Every dramatiq actor of the engine, in one place, each a thin shell over a stage module.

Messages carry ids (and, for ``distribute_request``, the agency's published request), never a
resident's email, token or location. Each actor can run twice without harm.

Urgent requests (missing person, threat to safety) travel on their own queues (``requests.urgent``,
``push.urgent``, ``email.urgent``): dramatiq's Redis broker ignores message priority, but a worker runs
one consumer per queue, so urgent messages never wait behind a county-wide backlog in Redis, and their
actors' lower ``priority`` puts them first among the messages a worker has already fetched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from dispatcher.broker import get_engine_broker
from dispatcher.ledger import Channel
from dispatcher.queues import (
    EMAIL_QUEUE,
    PUSH_QUEUE,
    REQUESTS_QUEUE,
    URGENT_EMAIL_QUEUE,
    URGENT_PUSH_QUEUE,
    URGENT_REQUESTS_QUEUE,
)

log = logging.getLogger(__name__)

#: How many fan-out messages a new request starts per channel (more workers can then share it).
FANOUT_PARALLELISM = 4
#: Among fetched messages a worker runs the lowest ``priority`` first.
URGENT_PRIORITY = 0
NORMAL_PRIORITY = 10
_ONE_HOUR_MS = 3_600_000
#: Retry soon after a dropped database or Redis connection; never wait longer than a minute.
_BACKOFF: dict[str, Any] = {"min_backoff": 1_000, "max_backoff": 60_000}

#: The engine's broker, built (and installed globally) before the actors below bind to it.
broker = get_engine_broker()


def _distribute(payload: dict[str, Any]) -> None:
    from dispatcher.pipeline import distribute

    urgent = _is_urgent(payload)
    request_id = payload.get("id") if isinstance(payload, dict) else None
    # The fan-out starts as soon as the first ledger rows are committed, while the rest are written.
    outcome = distribute(payload, on_first_rows=lambda: start_fanout(str(request_id), urgent=urgent))
    if outcome.start_fanout and outcome.request_id:
        start_fanout(outcome.request_id, urgent=urgent)


def _target(request_id: str, urgent: bool) -> None:
    from dispatcher.pipeline import target

    outcome = target(request_id, on_first_rows=lambda: start_fanout(request_id, urgent=urgent))
    if outcome.start_fanout:
        start_fanout(request_id, urgent=urgent)


def _is_urgent(payload: dict[str, Any]) -> bool:
    from dispatcher.config import URGENT_INCIDENT_TYPES

    return isinstance(payload, dict) and payload.get("incident_type") in URGENT_INCIDENT_TYPES


@dramatiq.actor(queue_name=REQUESTS_QUEUE, max_retries=20, time_limit=_ONE_HOUR_MS, priority=NORMAL_PRIORITY,
                **_BACKOFF)
def distribute_request(payload: dict[str, Any]) -> None:
    """Accept, target and start the fan-out of one approved Community Request."""
    _distribute(payload)


@dramatiq.actor(queue_name=URGENT_REQUESTS_QUEUE, max_retries=20, time_limit=_ONE_HOUR_MS,
                priority=URGENT_PRIORITY, **_BACKOFF)
def distribute_urgent_request(payload: dict[str, Any]) -> None:
    """:func:`distribute_request` for urgent incident types, on their own queue."""
    _distribute(payload)


@dramatiq.actor(queue_name=REQUESTS_QUEUE, max_retries=20, time_limit=_ONE_HOUR_MS, priority=NORMAL_PRIORITY,
                **_BACKOFF)
def target_request(request_id: str) -> None:
    """Target a stored request a crash left ``accepted`` (sent by the reconciler; ids only)."""
    _target(request_id, urgent=False)


@dramatiq.actor(queue_name=URGENT_REQUESTS_QUEUE, max_retries=20, time_limit=_ONE_HOUR_MS,
                priority=URGENT_PRIORITY, **_BACKOFF)
def target_urgent_request(request_id: str) -> None:
    """:func:`target_request` for urgent requests."""
    _target(request_id, urgent=True)


def enqueue_request(payload: dict[str, Any]) -> None:
    """Put a published request on its queue: urgent incident types on ``requests.urgent``."""
    actor = distribute_urgent_request if _is_urgent(payload) else distribute_request
    actor.send(payload)


def enqueue_targeting(request_id: str, *, urgent: bool) -> None:
    """Ask a worker to target a stored request again (the reconciler's nudge)."""
    (target_urgent_request if urgent else target_request).send(request_id)


def fanout_actor(channel: Channel, *, urgent: bool) -> dramatiq.Actor[[str], None]:
    """The actor that drains ``channel`` for normal or urgent requests."""
    if channel is Channel.PUSH:
        return send_urgent_push if urgent else send_push
    return send_urgent_email if urgent else send_email


def start_fanout(request_id: str, parallelism: int = FANOUT_PARALLELISM, *, urgent: bool = False) -> None:
    """Enqueue the fan-out messages of a request on both channels."""
    for _ in range(parallelism):
        for channel in Channel:
            fanout_actor(channel, urgent=urgent).send(request_id)


def nudge_fanout(request_id: str, channel: Channel, *, urgent: bool, count: int = 1) -> None:
    """Enqueue ``count`` more drains of one channel (the reconciler's nudge for a stuck request)."""
    for _ in range(count):
        fanout_actor(channel, urgent=urgent).send(request_id)


def _drain(request_id: str, channel: Channel, urgent: bool) -> None:
    from dispatcher.fanout import drain

    message = CurrentMessage.get_current_message()
    if message is not None and log.isEnabledFor(logging.DEBUG):  # how long the message waited for a thread
        age = time.time() - message.message_timestamp / 1000
        log.debug("drain started", extra={"request_id": request_id, "channel": channel.value, "urgent": urgent,
                                          "message_age_seconds": round(age, 4)})
    report = drain(request_id, channel)
    if report.more_work:
        delay_ms = int((report.retry_in or 0) * 1000)
        fanout_actor(channel, urgent=urgent).send_with_options(args=(request_id,), delay=delay_ms or None)


@dramatiq.actor(queue_name=PUSH_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS, priority=NORMAL_PRIORITY,
                **_BACKOFF)
def send_push(request_id: str) -> None:
    """Drain pending push deliveries of one request for a while, then pass the rest on."""
    _drain(request_id, Channel.PUSH, urgent=False)


@dramatiq.actor(queue_name=EMAIL_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS, priority=NORMAL_PRIORITY,
                **_BACKOFF)
def send_email(request_id: str) -> None:
    """Drain pending email deliveries of one request for a while, then pass the rest on."""
    _drain(request_id, Channel.EMAIL, urgent=False)


@dramatiq.actor(queue_name=URGENT_PUSH_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS, priority=URGENT_PRIORITY,
                **_BACKOFF)
def send_urgent_push(request_id: str) -> None:
    """:func:`send_push` for urgent requests, on their own queue."""
    _drain(request_id, Channel.PUSH, urgent=True)


@dramatiq.actor(queue_name=URGENT_EMAIL_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS,
                priority=URGENT_PRIORITY, **_BACKOFF)
def send_urgent_email(request_id: str) -> None:
    """:func:`send_email` for urgent requests, on their own queue."""
    _drain(request_id, Channel.EMAIL, urgent=True)
