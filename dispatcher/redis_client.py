"""One Redis client per process for the broker's Redis: shared rate limits, ops tools, request events."""

from __future__ import annotations

from functools import cache

import redis

from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError


@cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def shared_redis() -> redis.Redis:
    """A client for the configured ``REDIS_URL`` (the same server the dramatiq broker uses)."""
    url = get_settings().redis_url
    if not url:
        raise ConfigurationError("REDIS_URL is not set and no embedded Redis was started")
    return _client_for(url)
