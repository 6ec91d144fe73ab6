"""Retry-After as providers send it: delta-seconds or an HTTP-date (RFC 9110, section 10.2.3).

The hint decides how long residents wait and, after a quota error, how long every worker pauses. So a
value that cannot be read must never raise out of a drain (it means "no hint": the caller's default
applies), and an absurd one must not stop the fleet for days (it is clamped).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: The longest wait a provider's hint may impose; a longer one is cut to this.
RETRY_AFTER_MAX_SECONDS = 3600.0


def clamp_wait(seconds: float, cap: float = RETRY_AFTER_MAX_SECONDS) -> float | None:
    """``seconds`` between 0 and ``cap``; None for NaN or infinity (no usable hint)."""
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def retry_after_seconds(value: str | None, *, now: datetime | None = None,
                        cap: float = RETRY_AFTER_MAX_SECONDS) -> float | None:
    """Seconds to wait from a Retry-After value, between 0 and ``cap``; None when absent or unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():  # delta-seconds, however many digits
        return cap if len(text) > 9 else clamp_wait(int(text), cap)
    try:
        return clamp_wait(float(text), cap)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or the asctime form: HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return clamp_wait((when - (now or datetime.now(UTC))).total_seconds(), cap)


def seconds_until(epoch: str | None, *, now: float, cap: float = RETRY_AFTER_MAX_SECONDS) -> float | None:
    """Seconds from ``now`` until a reset given as a Unix time (``X-RateLimit-Reset``), clamped."""
    try:
        return clamp_wait(float((epoch or "").strip()) - now, cap)
    except ValueError:
        return None
