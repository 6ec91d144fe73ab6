"""The relay's one actor: send a stored text. Its message is an outbox row id, nothing else.

Bounded retries (a text days late is no help: the outbox TTL drops it anyway). Each proxy number sends
at most ``RELAY_RATE_PER_NUMBER`` texts a second across every worker (dramatiq's Redis window limiter,
keyed by the number's row id); a text over the limit is put back with a delay, which costs no retry.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dramatiq
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from dispatcher.broker import get_engine_broker
from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError

#: The queue of outgoing relay texts.
RELAY_QUEUE = "relay"
#: Attempts after the first: with the backoff below, about a quarter of an hour in all.
MAX_RETRIES = 8
_BACKOFF: dict[str, Any] = {"min_backoff": 1_000, "max_backoff": 300_000}

log = logging.getLogger(__name__)
broker = get_engine_broker()
_limiters: dict[tuple[str, float], WindowRateLimiter] = {}


def _limiter(sender: str) -> WindowRateLimiter:
    rate = get_settings().relay_rate_per_number
    if rate <= 0:
        raise ConfigurationError(f"RELAY_RATE_PER_NUMBER must be positive, got {rate}")
    key = (sender, rate)
    limiter = _limiters.get(key)
    if limiter is None:
        limit = max(1, math.floor(rate))
        window_seconds = max(1, round(limit / rate))
        from dispatcher.redis_client import shared_redis

        # The key names our own proxy number (not personal data), hashed by dramatiq into its key.
        limiter = WindowRateLimiter(RedisBackend(client=shared_redis()), f"relay-from-{sender}",
                                    limit=limit, window=window_seconds)
        _limiters[key] = limiter
    return limiter


@dramatiq.actor(queue_name=RELAY_QUEUE, max_retries=MAX_RETRIES, time_limit=60_000, **_BACKOFF)
def send_relay_text(outbox_id: int) -> None:
    """Send the stored text ``outbox_id`` (relayed message, confirmation or automatic reply)."""
    from dispatcher.db import get_pool
    from dispatcher.relay import outbox

    if type(outbox_id) is not int or outbox_id <= 0:  # a malformed message: nothing to retry
        log.warning("relay text message without an outbox id dropped", extra={"arg_type": type(outbox_id).__name__})
        return
    with get_pool().connection() as conn:
        sender = outbox.peek_sender(conn, outbox_id)
        if sender is None:
            return
        with _limiter(sender).acquire(raise_on_failure=False) as acquired:
            if not acquired:
                send_relay_text.send_with_options(args=(outbox_id,), delay=_limiter(sender).window_millis)
                return
            outbox.send_one(conn, outbox_id)
