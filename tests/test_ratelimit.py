"""The shared provider rate limit on real Redis: the budget, the pause, and two worker processes together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis

from dispatcher.channels import ratelimit
from dispatcher.ledger import Channel


def test_a_quiet_limiter_lets_a_burst_through_then_spaces_batches(redis_client: redis.Redis) -> None:
    first = ratelimit.reserve(Channel.PUSH, 100, client=redis_client, per_second_rate=100, burst_seconds=1.0)
    second = ratelimit.reserve(Channel.PUSH, 50, client=redis_client, per_second_rate=100, burst_seconds=1.0)
    assert first == ("ok", 0.0)
    kind, wait = second
    assert kind == "ok" and 0.45 < wait <= 0.5


def test_channels_have_separate_budgets(redis_client: redis.Redis) -> None:
    ratelimit.reserve(Channel.PUSH, 500, client=redis_client, per_second_rate=100, burst_seconds=1.0)
    assert ratelimit.reserve(Channel.EMAIL, 100, client=redis_client, per_second_rate=100,
                             burst_seconds=1.0) == ("ok", 0.0)


def test_slow_down_pauses_every_caller_and_only_ever_extends(redis_client: redis.Redis) -> None:
    assert ratelimit.slow_down(Channel.PUSH, 3, client=redis_client) == pytest.approx(3, abs=0.05)
    assert ratelimit.slow_down(Channel.PUSH, 1, client=redis_client) == pytest.approx(3, abs=0.05)
    kind, wait = ratelimit.reserve(Channel.PUSH, 1, client=redis_client, per_second_rate=1000)
    assert kind == "pause" and 2.8 < wait <= 3.0
    assert 2.8 < ratelimit.paused_for(Channel.PUSH, client=redis_client) <= 3.0
    assert ratelimit.reserve(Channel.EMAIL, 1, client=redis_client, per_second_rate=1000) == ("ok", 0.0)


def test_acquire_waits_out_a_pause(redis_client: redis.Redis) -> None:
    ratelimit.slow_down(Channel.EMAIL, 0.3, client=redis_client)
    started = time.monotonic()
    waited = ratelimit.acquire(Channel.EMAIL, 10, client=redis_client, per_second_rate=1000)
    assert 0.25 < time.monotonic() - started < 1.0 and waited > 0.25


def test_usage_per_second_is_recorded_for_status(redis_client: redis.Redis) -> None:
    ratelimit.reserve(Channel.PUSH, 40, client=redis_client, per_second_rate=1000)
    second = int(redis_client.time()[0])
    used = sum(int(redis_client.get(f"dispatcher:ratelimit:push:{s}") or 0) for s in (second - 1, second))
    assert used == 40


_WORKER = """
import json, sys, time
import redis
from dispatcher.channels import ratelimit
from dispatcher.ledger import Channel
client = redis.Redis.from_url(sys.argv[1])
seconds = float(sys.argv[2])
print("ready", flush=True)
start_at = float(sys.stdin.readline())  # the parent starts both together, once both are loaded
while time.time() < start_at:
    time.sleep(0.001)
sent = []
while time.time() < start_at + seconds:
    ratelimit.acquire(Channel.PUSH, 50, client=client, per_second_rate=1000, burst_seconds=0.1)
    sent.append(time.time())
print(json.dumps(sent))
"""


def test_two_worker_processes_together_stay_within_the_limit(redis_client: redis.Redis) -> None:
    """1,000 messages a second shared by two processes sending batches of 50 as fast as they can."""
    redis_url = os.environ["REDIS_URL"]  # the test Redis, over TCP or the embedded server's socket
    seconds = 3.0
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, redis_url, str(seconds)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:  # on a loaded machine starting Python takes seconds: wait for both before the clock
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    start_at = time.time() + 0.2
    for w in workers:
        assert w.stdin is not None
        w.stdin.write(f"{start_at}\n")
        w.stdin.flush()
    outputs = [json.loads(w.communicate(timeout=30)[0]) for w in workers]
    assert all(len(o) > 10 for o in outputs), f"both workers got a share: {[len(o) for o in outputs]}"
    stamps = sorted(t for o in outputs for t in o)
    # Over the whole run: the rate plus the burst, nothing more (one batch of slack for the last grant).
    total = 50 * len(stamps)
    assert total <= 1000 * seconds + 100 + 50
    assert total >= 0.8 * 1000 * seconds, "the limiter should not starve the workers"
    # Any one-second window: at most the rate plus the burst.
    per_window = Counter(int((t - start_at) * 4) for t in stamps)  # quarter seconds
    for quarter in range(int(seconds * 4) - 3):
        in_second = sum(per_window[quarter + k] for k in range(4)) * 50
        assert in_second <= 1000 + 100 + 50, f"{in_second} messages in the second starting at {quarter / 4}s"
