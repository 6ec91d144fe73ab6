"""The Redis client the ops modules share: the broker's Redis, from the settings."""

from __future__ import annotations

from dispatcher.redis_client import shared_redis as ops_redis

__all__ = ["ops_redis"]
