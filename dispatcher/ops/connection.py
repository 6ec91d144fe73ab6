"""The Redis client the ops modules share (the broker's Redis, from the settings)."""

from __future__ import annotations

from functools import cache

import redis

from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError


@cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def ops_redis() -> redis.Redis:
    """A Redis client for the configured broker URL."""
    url = get_settings().redis_url
    if not url:
        raise ConfigurationError("REDIS_URL is not set: ops tools need the broker's Redis")
    return _client_for(url)
