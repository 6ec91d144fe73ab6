"""Provider speed limits shared by every worker through Redis.

A fixed one-second window per provider: each batch takes its messages from the current second's
budget (``INCRBY``); past the budget the worker waits for the next second. A quota error from the
provider sets a shared pause that every worker honours, so one 429 slows the whole fleet.
"""

from __future__ import annotations

import time
from functools import cache

import redis

from dispatcher.config import get_settings
from dispatcher.ledger import Channel

_KEY = "dispatcher:ratelimit:{channel}:{second}"
_PAUSE_KEY = "dispatcher:ratelimit:{channel}:pause_until"


@cache
def _client() -> redis.Redis:
    url = get_settings().redis_url
    assert url, "REDIS_URL must be set before sending"
    return redis.Redis.from_url(url)


def per_second(channel: Channel) -> int:
    """The configured budget for one second, from the per-minute rate."""
    settings = get_settings()
    per_minute = settings.push_rate_per_minute if channel is Channel.PUSH else settings.email_rate_per_minute
    return max(1, per_minute // 60)


def acquire(channel: Channel, count: int, *, client: redis.Redis | None = None) -> float:
    """Block until ``count`` messages fit in the shared budget; return the seconds waited."""
    r = client or _client()
    limit = per_second(channel)
    waited = 0.0
    while True:
        pause = r.get(_PAUSE_KEY.format(channel=channel.value))
        now = time.time()
        if pause is not None and float(pause) > now:
            delay = float(pause) - now
            time.sleep(delay)
            waited += delay
            continue
        second = int(now)
        key = _KEY.format(channel=channel.value, second=second)
        pipe = r.pipeline()
        pipe.incrby(key, count)
        pipe.expire(key, 5)
        used = int(pipe.execute()[0])
        if used <= limit or used == count:
            # Within budget, or one batch larger than a whole second's budget on an empty second.
            return waited
        r.decrby(key, count)
        delay = (second + 1) - time.time()
        if delay > 0:
            time.sleep(delay)
            waited += delay


def slow_down(channel: Channel, seconds: float, *, client: redis.Redis | None = None) -> None:
    """Pause every worker's sends on ``channel`` for ``seconds`` (the provider said we are over quota)."""
    r = client or _client()
    until = time.time() + seconds
    key = _PAUSE_KEY.format(channel=channel.value)
    current = r.get(key)
    if current is None or float(current) < until:
        r.set(key, str(until), ex=max(1, int(seconds) + 1))
