"""Provider speed limits shared by every worker through Redis.

A generic cell rate algorithm (GCRA, a token bucket kept as one timestamp) per provider, run as one
Lua script so that checking and taking the budget is a single atomic step on Redis, with Redis's own
clock (workers on several hosts need not agree on the time). A batch of ``count`` messages *reserves*
its place: the script answers how long to wait before sending, and the next caller queues behind it,
so workers are served in arrival order and the long-run rate never exceeds the limit, however many
workers share it. A quota error from the provider sets a shared pause that every worker honours
(``slow_down``), so one 429 slows the whole fleet, not just the worker that saw it.

dramatiq's own rate limiters count one unit per ``acquire`` and answer "yes / no"; a fan-out batch
takes hundreds of units at once and wants to know how long to wait, hence this small script.
"""

from __future__ import annotations

import time

import redis

from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Channel
from dispatcher.redis_client import shared_redis

#: Seconds of budget a quiet limiter lets through at once (a burst after an idle period).
BURST_SECONDS = 1.0

_KEY = "dispatcher:ratelimit:{channel}:tat"
_USED_PREFIX = "dispatcher:ratelimit:{channel}"
_PAUSE_KEY = "dispatcher:ratelimit:{channel}:pause_until"

# KEYS[1] = the bucket's theoretical arrival time (TAT), KEYS[2] = the shared pause.
# ARGV[1] = messages per second, ARGV[2] = burst in seconds, ARGV[3] = messages in this batch,
# ARGV[4] = prefix of the per-second usage counters ``dispatcher:ratelimit:<channel>:<second>`` that
# ``dispatcher status`` reads (the second is the one the batch is allowed to go out in).
# Returns the seconds (as a string) the caller must wait before sending; its place is reserved.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then
  return {'pause', tostring(pause - now)}
end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost
local wait = new_tat - burst - now
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now + burst) * 1000) + 1000)
local used = ARGV[4] .. ':' .. tostring(math.floor(now + wait))
redis.call('INCRBY', used, tonumber(ARGV[3]))
redis.call('EXPIRE', used, 10)
return {'ok', tostring(wait)}
"""

# KEYS[1] = the shared pause; ARGV[1] = seconds. Only ever extends the pause.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < untl then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
  return tostring(untl - now)
end
return tostring(current - now)
"""


def rate(channel: Channel) -> float:
    """The configured rate for one provider, in messages (push) or recipients (email) a second."""
    settings = get_settings()
    per_minute = settings.push_rate_per_minute if channel is Channel.PUSH else settings.email_rate_per_minute
    if per_minute <= 0:
        raise ConfigurationError(f"the {channel.value} rate per minute must be positive, got {per_minute}")
    return per_minute / 60.0


def per_second(channel: Channel) -> int:
    """The configured rate rounded down to whole messages a second (at least 1), for reports."""
    return max(1, int(rate(channel)))


def reserve(channel: Channel, count: int, *, client: redis.Redis | None = None,
            per_second_rate: float | None = None, burst_seconds: float = BURST_SECONDS) -> tuple[str, float]:
    """One atomic step: ``("ok", wait)`` with ``count`` reserved after ``wait`` seconds, or
    ``("pause", wait)`` when every worker is paused for ``wait`` seconds (nothing reserved)."""
    r = client or shared_redis()
    per_sec = per_second_rate if per_second_rate is not None else rate(channel)
    keys = [_KEY.format(channel=channel.value), _PAUSE_KEY.format(channel=channel.value)]
    kind, wait = r.eval(_GCRA, 2, *keys, repr(per_sec), repr(burst_seconds), str(max(0, count)),
                        _USED_PREFIX.format(channel=channel.value))
    return (kind.decode() if isinstance(kind, bytes) else str(kind)), float(wait)


def acquire(channel: Channel, count: int, *, client: redis.Redis | None = None,
            per_second_rate: float | None = None, burst_seconds: float = BURST_SECONDS) -> float:
    """Block until ``count`` messages may go out under the shared limit; return the seconds waited."""
    waited = 0.0
    while True:
        kind, wait = reserve(channel, count, client=client, per_second_rate=per_second_rate,
                             burst_seconds=burst_seconds)
        if wait > 0:
            time.sleep(wait)
            waited += wait
        if kind == "ok":
            return waited


def slow_down(channel: Channel, seconds: float, *, client: redis.Redis | None = None) -> float:
    """Pause every worker's sends on ``channel`` for ``seconds`` (the provider said we are over quota).

    Returns the seconds the shared pause now lasts (an existing longer pause is kept).
    """
    r = client or shared_redis()
    left = r.eval(_PAUSE, 1, _PAUSE_KEY.format(channel=channel.value), repr(max(0.0, seconds)))
    return float(left)


def paused_for(channel: Channel, *, client: redis.Redis | None = None) -> float:
    """Seconds left of the shared pause on ``channel`` (0 when sends may go on)."""
    r = client or shared_redis()
    raw = r.get(_PAUSE_KEY.format(channel=channel.value))
    if raw is None:
        return 0.0
    server_seconds, micros = r.time()
    return max(0.0, float(raw) - (server_seconds + micros / 1_000_000))
