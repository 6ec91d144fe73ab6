"""Gauges sampled from the database and Redis: requests by state, overdue requests, queues, workers.

Counters tell what happened; these tell what *is*, which the alert rules need (a growing backlog, a
request past its expected finish). Every worker process samples every few seconds; the gauges are in
``livemax`` mode, so the fleet's value is one sample, not a sum.
"""

from __future__ import annotations

from dispatcher.ops.metrics import engine_metrics
from dispatcher.ops.progress import active_requests, requests_by_state
from dispatcher.ops.queues import queue_stats, worker_stats
from dispatcher.redis_client import shared_redis


def sample_once() -> None:
    """Read the fleet's state once and set the gauges."""
    from dispatcher.db import get_pool

    metrics = engine_metrics()
    client = shared_redis()
    for q in queue_stats(client):
        for kind in ("ready", "delayed", "in_flight", "dead"):
            metrics.queue_messages.labels(q.queue, kind).set(getattr(q, kind))
    metrics.workers_alive.set(worker_stats(client).alive)
    with get_pool().connection() as conn:
        by_state = requests_by_state(conn)
        overdue = sum(1 for r in active_requests(conn) if r.overdue)
    for state, n in by_state.items():
        metrics.requests.labels(state).set(n)
    metrics.requests_overdue.set(overdue)
