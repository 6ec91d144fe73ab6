"""A provider's quota as the sandbox enforces it: a token bucket holding one quota window's worth of calls.

FCM states its quota per minute (and refills it continuously, so a steady sender at the quota never
hits it); a bucket of ``quota`` tokens refilled at ``quota / window`` a second gives that, allows a
burst of up to one window after a quiet spell, and says exactly when the next call would pass, which
is what Retry-After and X-RateLimit-Reset report.
"""

from __future__ import annotations

import time


class Quota:
    """One bucket; the limit can change between calls (fault plans change at run time)."""

    def __init__(self) -> None:
        self._tokens = -1.0
        self._stamp = 0.0
        self._limit = 0

    def take(self, limit: int, window_seconds: float, now: float | None = None) -> float:
        """Take one call from the bucket: 0.0 when it may go on, else the seconds until it would pass."""
        now = time.monotonic() if now is None else now
        if limit != self._limit or self._tokens < 0:
            self._limit = limit
            self._tokens = float(limit)
            self._stamp = now
        rate = limit / window_seconds
        self._tokens = min(float(limit), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def remaining(self) -> int:
        """Whole calls left in the bucket after the last :meth:`take`."""
        return max(0, int(self._tokens))
