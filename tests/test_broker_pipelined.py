"""``enqueue_pipelined`` mirrors dramatiq's own enqueue (its Lua script and arguments, which dramatiq does
not promise): messages it enqueues, in one pipeline, must be consumed by a real worker like any other,
also after Redis has forgotten the script. These tests fail if a dramatiq upgrade changes that."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis

from dispatcher.actors import broker
from dispatcher.broker import enqueue_pipelined

QUEUE = "pipelined_test"
_seen: list[int] = []
_lock = threading.Lock()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def pipelined_probe(number: int) -> None:
    with _lock:
        _seen.append(number)


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"a worker consumed {sorted(_seen)} only"
        time.sleep(0.05)


def _consume(redis_client: redis.Redis, numbers: list[int]) -> None:
    worker = dramatiq.Worker(broker, worker_threads=2, queues={QUEUE}, worker_timeout=100)
    worker.start()
    try:
        _wait_for(lambda: sorted(_seen) == numbers)
    finally:
        worker.stop()


def test_pipelined_messages_are_consumed_like_any_other(redis_client: redis.Redis) -> None:
    _seen.clear()
    numbers = list(range(1, 8))
    enqueue_pipelined(broker, [pipelined_probe.message(number) for number in numbers])
    _consume(redis_client, numbers)


def test_a_script_redis_forgot_is_loaded_again(redis_client: redis.Redis) -> None:
    _seen.clear()
    redis_client.script_flush()
    enqueue_pipelined(broker, [pipelined_probe.message(number) for number in (1, 2, 3)])
    _consume(redis_client, [1, 2, 3])
