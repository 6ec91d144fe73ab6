"""How much to keep in flight, from Little's law: in flight = target rate × observed latency.

A provider far away answers in tens to hundreds of milliseconds; a fixed number of calls in flight then
caps the rate at that number ÷ the latency, long before the CPU or the quota does. So the number of
calls (push) and of batches (fan-out) in flight per worker process follows the configured rate times
an exponentially weighted moving average of what calls and batches actually take, with headroom for
the noise of the average, clamped to a floor (cheap providers keep today's pool) and a ceiling (memory
and sockets stay bounded). The fleet-wide limiter (:mod:`.ratelimit`) is still what stops at the quota:
this only makes sure a worker *can* reach it.

- :class:`LatencyAverage`: the moving average (thread-safe enough: a float read and written whole).
- :class:`Sizing`: rate, headroom, floor and ceiling; :meth:`Sizing.in_flight` is the formula.
- :class:`AdaptiveLimit`: an asyncio semaphore whose size follows the average (the push lanes).
- :class:`BatchGate`: the same for threads, counting batches (the fan-out, any channel).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from dataclasses import dataclass

#: Weight of one new observation in the moving average (about the last hundred calls count).
EWMA_WEIGHT = 0.02
#: Margin over rate × latency, for the average's noise and the latency tail.
HEADROOM = 1.25


class LatencyAverage:
    """An exponentially weighted moving average of durations in seconds, starting from a guess."""

    __slots__ = ("seconds", "weight")

    def __init__(self, initial_seconds: float, weight: float = EWMA_WEIGHT) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"an average's weight must be in (0, 1], got {weight}")
        self.seconds = max(0.0, initial_seconds)
        self.weight = weight

    def observe(self, seconds: float) -> float:
        """Fold one duration in; returns the new average."""
        self.seconds += self.weight * (max(0.0, seconds) - self.seconds)
        return self.seconds


@dataclass(frozen=True)
class Sizing:
    """Little's law with bounds: ``clamp(ceil(rate × latency × headroom / unit), minimum, maximum)``.

    ``unit`` is what one slot carries: 1 for a call, the batch size for a batch in flight.
    """

    rate_per_second: float
    minimum: int
    maximum: int
    headroom: float = HEADROOM
    unit: int = 1

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0:
            raise ValueError(f"the target rate must be positive, got {self.rate_per_second}")
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {self.minimum} and {self.maximum}")
        if self.unit < 1 or self.headroom <= 0:
            raise ValueError(f"unit must be >= 1 and headroom > 0, got {self.unit} and {self.headroom}")

    def in_flight(self, latency_seconds: float) -> int:
        """Slots to keep busy so that ``rate_per_second`` goes through at ``latency_seconds`` each."""
        wanted = math.ceil(self.rate_per_second * max(0.0, latency_seconds) * self.headroom / self.unit)
        return min(self.maximum, max(self.minimum, wanted))


class AdaptiveLimit:
    """A semaphore for one event loop whose size follows Little's law as call latencies are observed.

    Waiters are served in arrival order, urgent ones (a missing person's request) before the rest. When
    the size shrinks, calls already in flight finish; no new one starts until the count is below the
    new size. Use on the loop thread only.
    """

    def __init__(self, sizing: Sizing, initial_latency_seconds: float) -> None:
        self.sizing = sizing
        self.latency = LatencyAverage(initial_latency_seconds)
        self.limit = sizing.in_flight(initial_latency_seconds)
        self.in_use = 0
        #: The most slots ever held at once (for tests and benchmarks).
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool = False) -> None:
        """Wait for a slot (give it back with :meth:`release`); an urgent caller goes to the front."""
        if self.in_use < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if urgent:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as it was cancelled: hand the slot on
            raise

    def _take(self) -> None:
        self.in_use += 1
        if self.in_use > self.peak:
            self.peak = self.in_use

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def observe(self, seconds: float) -> None:
        """One call took ``seconds``: move the average and the size with it."""
        limit = self.sizing.in_flight(self.latency.observe(seconds))
        if limit != self.limit:
            grew = limit > self.limit
            self.limit = limit
            if grew:
                self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)


#: Batches an urgent request's drain may have in flight beyond a gate's size.
URGENT_EXTRA = 2


class BatchGate:
    """Batches in flight for one channel in one worker process, however many threads drain at once.

    The size follows Little's law at batch level: rate × the average time one batch takes to send ÷
    the batch size. A drain enters before it claims rows and leaves when the batch is recorded, so the
    rows a process holds under lease, and a killed process may re-send, stay bounded. An urgent
    request's drain may go :data:`URGENT_EXTRA` batches past the size, so it never waits for a
    county-wide request's batches to finish.
    """

    def __init__(self, sizing: Sizing, initial_seconds: float, weight: float = 0.1) -> None:
        self.sizing = sizing
        self.duration = LatencyAverage(initial_seconds, weight)
        self.running = 0
        #: The most batches ever in flight at once (for tests and benchmarks).
        self.peak = 0
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return self.sizing.in_flight(self.duration.seconds)

    def enter(self, timeout: float, urgent: bool = False) -> bool:
        """Wait up to ``timeout`` seconds for room for one more batch; False when none came."""
        extra = URGENT_EXTRA if urgent else 0
        with self._changed:
            if not self._changed.wait_for(lambda: self.running < self.limit + extra, max(0.0, timeout)):
                return False
            self.running += 1
            self.peak = max(self.peak, self.running)
            return True

    def leave(self, seconds: float | None = None) -> None:
        """One batch is done (``seconds``: how long its send took, None when nothing was sent)."""
        with self._changed:
            self.running -= 1
            if seconds is not None:
                self.duration.observe(seconds)
            self._changed.notify_all()
