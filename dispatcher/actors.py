"""Every dramatiq actor of the engine, in one place, each a thin shell over a stage module.

Messages carry ids (and, for ``distribute_request``, the agency's published request), never a
resident's email, token or location. Each actor can run twice without harm.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from dispatcher import broker as _broker  # installs the broker before the actors below bind to it
from dispatcher.broker import EMAIL_QUEUE, PUSH_QUEUE, REQUESTS_QUEUE
from dispatcher.ledger import Channel

#: How many fan-out messages a new request starts per channel (more workers can then share it).
FANOUT_PARALLELISM = 4
_ONE_HOUR_MS = 3_600_000

assert _broker.broker is dramatiq.get_broker()


@dramatiq.actor(queue_name=REQUESTS_QUEUE, max_retries=20, time_limit=_ONE_HOUR_MS)
def distribute_request(payload: dict[str, Any]) -> None:
    """Accept, target and start the fan-out of one approved Community Request."""
    from dispatcher.pipeline import distribute

    outcome = distribute(payload)
    if outcome.start_fanout and outcome.request_id:
        start_fanout(outcome.request_id)


def start_fanout(request_id: str, parallelism: int = FANOUT_PARALLELISM) -> None:
    """Enqueue the fan-out messages of a request on both channels."""
    for _ in range(parallelism):
        send_push.send(request_id)
        send_email.send(request_id)


def _drain(request_id: str, channel: Channel) -> None:
    from dispatcher.fanout import drain

    actor = send_push if channel is Channel.PUSH else send_email
    report = drain(request_id, channel)
    if report.more_work:
        delay_ms = int((report.retry_in or 0) * 1000)
        actor.send_with_options(args=(request_id,), delay=delay_ms or None)


@dramatiq.actor(queue_name=PUSH_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS)
def send_push(request_id: str) -> None:
    """Drain pending push deliveries of one request for a while, then pass the rest on."""
    _drain(request_id, Channel.PUSH)


@dramatiq.actor(queue_name=EMAIL_QUEUE, max_retries=50, time_limit=_ONE_HOUR_MS)
def send_email(request_id: str) -> None:
    """Drain pending email deliveries of one request for a while, then pass the rest on."""
    _drain(request_id, Channel.EMAIL)
