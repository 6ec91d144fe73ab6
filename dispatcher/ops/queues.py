"""Queue depths and live workers, read straight from dramatiq's Redis layout with plain commands.

dramatiq's Redis broker (``dramatiq/brokers/redis/dispatch.lua``) keeps, under its namespace:

* ``<ns>:<queue>``: a list of ready message ids; ``<ns>:<queue>.DQ``: delayed messages waiting for a
  worker to fetch them (workers then hold them in memory until their ETA);
* ``<ns>:<queue>.XQ``: a sorted set of dead-lettered message ids;
* ``<ns>:__acks__.<worker>.<queue>``: a set of messages a worker fetched and has not acknowledged;
* ``<ns>:__heartbeats__``: a sorted set of worker (broker) ids by last heartbeat, in milliseconds.

Reading these is cheap (lengths and cardinalities only) and never touches a message's content.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
from dramatiq.brokers.redis import DEFAULT_HEARTBEAT_TIMEOUT

from dispatcher.queues import ALL_QUEUES, NAMESPACE

__all__ = ["QueueStats", "WorkerStats", "queue_stats", "worker_stats"]


@dataclass(frozen=True)
class QueueStats:
    """How many messages of one queue are where."""

    queue: str
    #: Waiting in the queue for a worker.
    ready: int
    #: Scheduled for later (retries with backoff, fan-out continuations), fetched or not.
    delayed: int
    #: Fetched by a live worker and not yet acknowledged.
    in_flight: int
    #: Dead-lettered: retries exhausted (kept by dramatiq for a week).
    dead: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorkerStats:
    """Worker processes known to the broker by their heartbeats."""

    alive: int
    #: Processes whose last heartbeat is older than dramatiq's timeout (crashed or stopped).
    stale: int
    #: Seconds since the freshest heartbeat, ``None`` when no worker ever beat.
    last_heartbeat_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ack_keys(client: redis.Redis, namespace: str) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k)
            for k in client.scan_iter(match=f"{namespace}:__acks__.*", count=500)]


def queue_stats(client: redis.Redis, queues: tuple[str, ...] = ALL_QUEUES, *,
                namespace: str = NAMESPACE) -> list[QueueStats]:
    """Ready, delayed, in-flight and dead counts for each queue."""
    ack_keys = _ack_keys(client, namespace)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(f"{namespace}:{queue}")
        pipe.llen(f"{namespace}:{queue}.DQ")
        pipe.zcard(f"{namespace}:{queue}.XQ")
    for key in ack_keys:
        pipe.scard(key)
    results = [int(n) for n in pipe.execute()]
    acked = dict(zip(ack_keys, results[3 * len(queues):], strict=True))
    stats = []
    for i, queue in enumerate(queues):
        ready, delayed_waiting, dead = results[3 * i: 3 * i + 3]
        in_flight = sum(n for key, n in acked.items() if key.endswith(f".{queue}"))
        delayed_held = sum(n for key, n in acked.items() if key.endswith(f".{queue}.DQ"))
        stats.append(QueueStats(queue, ready, delayed_waiting + delayed_held, in_flight, dead))
    return stats


def worker_stats(client: redis.Redis, *, namespace: str = NAMESPACE,
                 timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT) -> WorkerStats:
    """Live and stale worker processes from the broker's heartbeat set."""
    now_ms = time.time() * 1000
    entries: list[Any] = list(client.zrange(f"{namespace}:__heartbeats__", 0, -1, withscores=True))
    beats = [float(entry[1]) for entry in entries]
    alive = sum(1 for b in beats if now_ms - b < timeout_ms)
    newest = max(beats, default=None)
    age = None if newest is None else round(max(0.0, now_ms - newest) / 1000, 1)
    return WorkerStats(alive=alive, stale=len(beats) - alive, last_heartbeat_age_s=age)
