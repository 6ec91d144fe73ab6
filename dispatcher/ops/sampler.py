"""Gauges sampled from the database and Redis: requests by state, overdue requests, queues, workers.

Counters tell what happened; these tell what *is*, which the alert rules need (a growing backlog, a
request past its expected finish). Every worker process sets the gauges every few seconds; they are
in ``livemax`` mode, so the fleet's value is one sample, not a sum.

Whether a request is overdue means counting its ledger rows, a million for a county; so the database
is read by one process of the fleet per interval (whichever takes a short Redis lock), which shares
the figures through Redis, and every process sets its gauges from that one sample.
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.ops.metrics import engine_metrics
from dispatcher.ops.progress import active_requests, requests_by_state
from dispatcher.ops.queues import queue_stats, worker_stats
from dispatcher.queues import NAMESPACE
from dispatcher.redis_client import shared_redis

#: The fleet's last database sample (JSON), and the lock of the process reading the next one.
SAMPLE_KEY = f"{NAMESPACE}:ops:sample"
SAMPLE_LOCK_KEY = f"{NAMESPACE}:ops:sample:lock"


def _database_sample() -> dict[str, Any]:
    from dispatcher.db import get_pool

    with get_pool().connection() as conn:
        by_state = requests_by_state(conn)
        overdue = sum(1 for r in active_requests(conn) if r.overdue)
    return {"by_state": by_state, "overdue": overdue}


def shared_database_sample(client: Any, interval_seconds: float) -> dict[str, Any]:
    """The fleet's database sample: read here if no other process read one this interval, else theirs."""
    ttl = max(1, int(interval_seconds))
    if client.set(SAMPLE_LOCK_KEY, b"1", nx=True, ex=ttl):
        sample = _database_sample()
        client.set(SAMPLE_KEY, json.dumps(sample), ex=ttl * 3)
        return sample
    shared = client.get(SAMPLE_KEY)
    return json.loads(shared) if shared else _database_sample()


def sample_once(interval_seconds: float = 15.0) -> None:
    """Read the fleet's state once and set the gauges."""
    metrics = engine_metrics()
    client = shared_redis()
    for q in queue_stats(client):
        for kind in ("ready", "delayed", "in_flight", "dead"):
            metrics.queue_messages.labels(q.queue, kind).set(getattr(q, kind))
    metrics.workers_alive.set(worker_stats(client).alive)
    sample = shared_database_sample(client, interval_seconds)
    for state, n in sample["by_state"].items():
        metrics.requests.labels(state).set(n)
    metrics.requests_overdue.set(sample["overdue"])
