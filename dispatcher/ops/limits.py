"""How much of each provider's shared rate limit the fleet is using, from the limiter's Redis keys.

The limiter (:mod:`dispatcher.channels.ratelimit`) counts messages per provider in one key per second
(``dispatcher:ratelimit:<channel>:<second>``) and keeps a fleet-wide pause after a quota error
(``...:pause_until``). This reads them without taking from the budget.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from dispatcher.channels.ratelimit import per_second
from dispatcher.ledger import Channel

_KEY = "dispatcher:ratelimit:{channel}:{second}"
_PAUSE_KEY = "dispatcher:ratelimit:{channel}:pause_until"


@dataclass(frozen=True)
class LimitUse:
    """One provider's budget and what was taken from it."""

    channel: str
    limit_per_s: int
    used_this_second: int
    used_last_second: int
    #: Share of the budget taken in the last full second (1.0 = at the limit).
    utilisation: float
    #: Seconds left of a pause a quota error imposed on every worker (0 when none).
    paused_for_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate_limit_use(client: redis.Redis, *, now: float | None = None) -> list[LimitUse]:
    """Budget use of every provider channel."""
    now = time.time() if now is None else now
    second = int(now)
    pipe = client.pipeline(transaction=False)
    for channel in Channel:
        pipe.get(_KEY.format(channel=channel.value, second=second))
        pipe.get(_KEY.format(channel=channel.value, second=second - 1))
        pipe.get(_PAUSE_KEY.format(channel=channel.value))
    values = pipe.execute()
    uses = []
    for i, channel in enumerate(Channel):
        current, last, pause = values[3 * i: 3 * i + 3]
        limit = per_second(channel)
        used_last = int(last or 0)
        uses.append(LimitUse(
            channel=channel.value, limit_per_s=limit, used_this_second=int(current or 0),
            used_last_second=used_last, utilisation=round(used_last / limit, 3),
            paused_for_s=round(max(0.0, float(pause) - now), 1) if pause is not None else 0.0,
        ))
    return uses
