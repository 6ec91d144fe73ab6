"""Little's law sizing: the formula, the moving average, the adaptive semaphore and the batch gate."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dispatcher.channels.concurrency import URGENT_EXTRA, AdaptiveLimit, BatchGate, LatencyAverage, Sizing

PUSH = Sizing(10_000, minimum=64, maximum=1024)


@pytest.mark.parametrize(("sizing", "latency", "expected"), [
    (PUSH, 0.0, 64),                      # a provider next door: the floor
    (PUSH, 0.004, 64),                    # 10,000/s × 4 ms × 1.25 = 50: still the floor
    (PUSH, 0.05, 625),                    # 50 ms: 10,000/s × 0.05 s × 1.25
    (PUSH, 0.06, 750),                    # the benchmark median
    (PUSH, 0.1, 1024),                    # 1,250 wanted: the ceiling bounds memory and sockets
    (PUSH, -1.0, 64),                     # a clock step backwards cannot make it negative
    (Sizing(100_000, 1, 32, unit=1_000), 0.15, 19),   # email: batches of 1,000 at 150 ms
    (Sizing(10_000, 1, 24, unit=500), 0.7, 18),        # push batches held 0.7 s by their tail
    (Sizing(10_000, 1, 24, unit=500), 5.0, 24),
    (Sizing(1.0, 1, 8), 0.5, 1),
])
def test_in_flight_is_rate_times_latency_with_headroom_clamped(sizing: Sizing, latency: float, expected: int) -> None:
    assert sizing.in_flight(latency) == expected


@pytest.mark.parametrize("arguments", [
    {"rate_per_second": 0, "minimum": 1, "maximum": 2},
    {"rate_per_second": 10, "minimum": 0, "maximum": 2},
    {"rate_per_second": 10, "minimum": 3, "maximum": 2},
    {"rate_per_second": 10, "minimum": 1, "maximum": 2, "unit": 0},
    {"rate_per_second": 10, "minimum": 1, "maximum": 2, "headroom": 0},
])
def test_a_sizing_that_cannot_work_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Sizing(**arguments)  # type: ignore[arg-type]


def test_the_average_follows_a_change_of_latency_within_a_few_hundred_calls() -> None:
    average = LatencyAverage(0.02)
    for _ in range(300):
        average.observe(0.1)
    assert 0.095 < average.seconds <= 0.1
    for _ in range(300):
        average.observe(0.05)
    assert 0.05 <= average.seconds < 0.053
    with pytest.raises(ValueError):
        LatencyAverage(0.1, weight=0)


def test_the_limit_grows_with_latency_serves_waiters_in_order_and_shrinks_without_cutting_calls() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(Sizing(1_000, minimum=2, maximum=10), initial_latency_seconds=0.0)
        assert limit.limit == 2
        await limit.acquire()
        await limit.acquire()
        served: list[int] = []

        async def waiter(number: int) -> None:
            await limit.acquire()
            served.append(number)

        waiting = [asyncio.ensure_future(waiter(n)) for n in range(4)]
        await asyncio.sleep(0)
        assert served == [] and limit.in_use == 2
        for _ in range(200):
            limit.observe(0.006)  # 1,000/s × 6 ms × 1.25 = 7.5: eight slots
        await asyncio.sleep(0)
        assert limit.limit == 8 and served == [0, 1, 2, 3] and limit.in_use == 6
        for _ in range(400):
            limit.observe(0.0)
        assert limit.limit == 2 and limit.in_use == 6, "calls in flight finish; none is cut"
        late = asyncio.ensure_future(waiter(9))
        for _ in range(4):
            limit.release()
        await asyncio.sleep(0)
        assert served == [0, 1, 2, 3] and limit.in_use == 2, "no new call while at the smaller size"
        limit.release()
        await asyncio.wait_for(late, 1)
        assert served[-1] == 9 and limit.in_use == 2 and limit.peak == 6
        await asyncio.gather(*waiting)

    asyncio.run(scenario())


def test_a_waiter_cancelled_while_waiting_takes_no_slot() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(Sizing(1_000, minimum=1, maximum=1), initial_latency_seconds=0.0)
        await limit.acquire()
        cancelled = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        limit.release()
        assert limit.in_use == 0
        await asyncio.wait_for(limit.acquire(), 1)
        assert limit.in_use == 1

    asyncio.run(scenario())


def test_the_batch_gate_admits_rate_times_batch_time_and_times_out_when_full() -> None:
    gate = BatchGate(Sizing(1_000, minimum=1, maximum=4, unit=100), initial_seconds=0.2)
    assert gate.limit == 3  # 1,000/s × 0.2 s × 1.25 ÷ 100 = 2.5
    assert all(gate.enter(0) for _ in range(3))
    started = time.monotonic()
    assert not gate.enter(0.05) and time.monotonic() - started >= 0.05
    admitted: list[bool] = []
    waiting = threading.Thread(target=lambda: admitted.append(gate.enter(5)))
    waiting.start()
    gate.leave(0.2)
    waiting.join(5)
    assert admitted == [True] and gate.running == 3 and gate.peak == 3
    for _ in range(3):
        gate.leave(None)
    assert gate.running == 0 and gate.limit == 3, "a batch that sent nothing does not move the average"
    for _ in range(50):
        gate.enter(0)
        gate.leave(1.0)
    assert gate.limit == 4


def test_an_urgent_caller_takes_the_next_free_slot_before_earlier_waiters() -> None:
    async def scenario() -> list[str]:
        limit = AdaptiveLimit(Sizing(1_000, minimum=1, maximum=1), initial_latency_seconds=0.0)
        await limit.acquire()
        order: list[str] = []

        async def wait(name: str, urgent: bool) -> None:
            await limit.acquire(urgent)
            order.append(name)

        waiting = [asyncio.ensure_future(wait(name, urgent)) for name, urgent in
                   (("county-1", False), ("county-2", False), ("missing-person", True))]
        await asyncio.sleep(0)
        for _ in waiting:
            limit.release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)
        return order

    assert asyncio.run(scenario()) == ["missing-person", "county-1", "county-2"]


def test_an_urgent_drain_enters_a_full_gate_within_its_reserve() -> None:
    gate = BatchGate(Sizing(1_000, minimum=2, maximum=2, unit=100), initial_seconds=0.2)
    assert gate.enter(0) and gate.enter(0) and not gate.enter(0)  # full for a county's drain
    assert all(gate.enter(0, urgent=True) for _ in range(URGENT_EXTRA))
    assert not gate.enter(0, urgent=True) and gate.running == 2 + URGENT_EXTRA
