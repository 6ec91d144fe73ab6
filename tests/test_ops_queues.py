"""dramatiq's Redis key layout, which ``ops/queues.py`` and ``deadletters.py`` read directly.

Those modules count ready, delayed, in-flight and dead messages and find live workers by reading
dramatiq's keys, a layout dramatiq does not promise. These tests enqueue real messages on the real
Redis broker and fail loudly, naming the key, if a dramatiq upgrade moves any of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
import redis

from dispatcher.actors import broker
from dispatcher.deadletters import list_dead_letters
from dispatcher.ops.queues import queue_stats, worker_stats
from dispatcher.queues import NAMESPACE

QUEUE = "layout_test"
_release = threading.Event()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def layout_probe(request_id: str, fail: bool = False) -> None:
    """Holds its message until released (so it is in flight), or fails at once (so it is dead)."""
    if fail:
        raise RuntimeError("dead on purpose")
    _release.wait(20)


def _moved(key: str) -> str:
    return (f"dramatiq's Redis key {key!r} is missing: the broker's key layout changed, so ops/queues.py and "
            "deadletters.py must follow it (and the dramatiq bound in pyproject.toml be revisited)")


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_ready_and_delayed_messages_sit_where_ops_counts_them(redis_client: redis.Redis) -> None:
    layout_probe.send("r-ready")
    layout_probe.send_with_options(args=("r-later",), delay=600_000)
    ready, delayed = f"{NAMESPACE}:{QUEUE}", f"{NAMESPACE}:{QUEUE}.DQ"
    assert redis_client.type(ready) == b"list" and redis_client.llen(ready) == 1, _moved(ready)
    assert redis_client.type(delayed) == b"list" and redis_client.llen(delayed) == 1, _moved(delayed)
    [stats] = queue_stats(redis_client, (QUEUE,))
    assert (stats.ready, stats.delayed, stats.in_flight, stats.dead) == (1, 1, 0, 0)


def test_in_flight_dead_and_heartbeat_keys_sit_where_ops_reads_them(redis_client: redis.Redis) -> None:
    _release.clear()
    worker = dramatiq.Worker(broker, worker_threads=2, queues={QUEUE}, worker_timeout=100)
    worker.start()
    try:
        layout_probe.send("r-held")
        acks = f"{NAMESPACE}:__acks__.*.{QUEUE}"
        _wait_for(lambda: any(redis_client.scard(k) for k in redis_client.scan_iter(match=acks)))
        heartbeats = f"{NAMESPACE}:__heartbeats__"
        assert redis_client.type(heartbeats) == b"zset", _moved(heartbeats)
        assert worker_stats(redis_client).alive >= 1
        [stats] = queue_stats(redis_client, (QUEUE,))
        assert stats.in_flight == 1, _moved(acks)

        layout_probe.send("r-dead", fail=True)
        dead, bodies = f"{NAMESPACE}:{QUEUE}.XQ", f"{NAMESPACE}:{QUEUE}.XQ.msgs"
        _wait_for(lambda: redis_client.zcard(dead) == 1)
        assert redis_client.type(bodies) == b"hash" and redis_client.hlen(bodies) == 1, _moved(bodies)
        assert [letter.request_id for letter in list_dead_letters(broker, QUEUE)] == ["r-dead"]
    finally:
        _release.set()
        worker.stop()
