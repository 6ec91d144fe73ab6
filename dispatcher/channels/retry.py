"""How long to wait before trying residents again after a temporary provider failure.

Exponential backoff with full jitter (so a fleet that failed together does not retry together),
never shorter than what the provider asked for in Retry-After.
"""

from __future__ import annotations

import random

#: First backoff step, in seconds.
BACKOFF_BASE_SECONDS = 1.0
#: Longest backoff, whatever the attempt.
BACKOFF_MAX_SECONDS = 300.0


def backoff_seconds(attempt: int, retry_after: float | None = None, *, base: float = BACKOFF_BASE_SECONDS,
                    cap: float = BACKOFF_MAX_SECONDS, jitter: bool = True) -> float:
    """Wait before attempt ``attempt + 1`` (``attempt`` counts from 1), at least ``retry_after``.

    Without jitter the steps are ``base``, ``2·base``, ``4·base`` ... up to ``cap``; with jitter a
    random point between half the step and the step.
    """
    step = min(cap, base * 2.0 ** max(0, attempt - 1))
    if jitter:
        step = step / 2 + random.random() * step / 2
    return max(step, retry_after or 0.0)
