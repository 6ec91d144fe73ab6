"""The reconciler: finds requests that stopped moving and sets them going again.

The fan-out normally carries itself forward, one drain message handing on to the next. That chain is
only as durable as its messages: a worker killed with messages prefetched, or a Redis restart without
persistence, loses them. Every few seconds one worker process (whichever takes a PostgreSQL advisory
lock) sweeps the requests still in flight, using the database alone:

* ``accepted`` or ``targeting``, with no live worker writing its rows (the writer's advisory lock is
  free) and no activity for a while → target it again (rows already written are kept);
* ``sending`` with claimable rows on a channel nobody claimed from for a while → enqueue a drain; rows
  held by quiet hours are not claimable until their ``not_before``, so the first sweep after a hold
  ends wakes the fan-out (no delayed message has to survive the night);
* ``sending`` with nothing pending (held rows are pending) → ``completed`` (a drain died between its
  last batch and the end);
* ``accepted`` or ``sending`` past the 60-day window → pending rows ``expired``, request ``expired``.

So recovery never depends on any single message surviving; the cost is a few duplicate messages,
which are harmless because every stage is idempotent.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from dispatcher import ledger, lifecycle
from dispatcher.config import get_settings
from dispatcher.db.types import Conn
from dispatcher.ledger import Channel
from dispatcher.lifecycle import ACTIVE_STATES, State

log = logging.getLogger(__name__)

_LOCK_KEY = 0x72636E6C  # "rcnl"

_EXPIRED = """
SELECT id FROM community_requests
WHERE state = ANY(%(active)s) AND respond_until <= now()
FOR UPDATE SKIP LOCKED
"""
_FINISHED = """
SELECT c.id FROM community_requests c
WHERE c.state = %(sending)s
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.request_id = c.id AND d.status = 'pending')
FOR UPDATE SKIP LOCKED
"""
_STUCK_ACCEPTED = """
SELECT c.id, c.urgent FROM community_requests c
LEFT JOIN request_activity a ON a.request_id = c.id AND a.stage = 'target'
WHERE c.state = ANY(%(before_sending)s)
  AND greatest(c.updated_at, a.active_at) < now() - make_interval(secs => %(stale)s)
FOR UPDATE OF c SKIP LOCKED
"""
_STUCK_SENDING = """
SELECT c.id, c.urgent, ch.channel FROM community_requests c
CROSS JOIN (VALUES ('push'), ('email')) AS ch(channel)
LEFT JOIN request_activity a ON a.request_id = c.id AND a.stage = ch.channel
WHERE c.state = %(sending)s
  AND coalesce(a.active_at, c.targeted_at, c.updated_at) < now() - make_interval(secs => %(stale)s)
  AND EXISTS (SELECT 1 FROM deliveries d
              WHERE d.request_id = c.id AND d.channel = ch.channel AND d.status = 'pending'
                AND (d.lease_until IS NULL OR d.lease_until < now())
                AND (d.not_before IS NULL OR d.not_before <= now()))
"""
# The states, always from lifecycle.State (never spelled here).
_STATES = {
    "active": [state.value for state in ACTIVE_STATES],
    "before_sending": [State.ACCEPTED.value, State.TARGETING.value],
    "sending": State.SENDING.value,
}


@dataclass
class SweepReport:
    """What one sweep did (ids only)."""

    expired: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    retargeted: list[str] = field(default_factory=list)
    nudged: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.expired or self.completed or self.retargeted or self.nudged)


@dataclass(frozen=True)
class Nudges:
    """How the reconciler sets a request going again.

    Passed in by whoever builds the broker (:func:`dispatcher.broker.enqueueing_nudges` enqueues the
    actors' messages), so the reconciler never imports the actors.
    """

    target: Callable[[str, bool], None]
    drain: Callable[[str, Channel, bool], None]


def sweep(conn: Conn, *, nudges: Nudges, stale_seconds: float | None = None) -> SweepReport | None:
    """One pass over the requests in flight; ``None`` when another process is sweeping right now.

    Runs in one transaction under an advisory lock. A nudge is enqueued before the transaction commits
    its activity mark: if the enqueue fails (Redis down) nothing is marked and the next sweep tries again.
    """
    stale = get_settings().stale_seconds if stale_seconds is None else stale_seconds
    report = SweepReport()
    with conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not locked or not locked[0]:
            return None
        for (request_id,) in conn.execute(_EXPIRED, _STATES).fetchall():
            lifecycle.expire(conn, str(request_id))
            report.expired.append(str(request_id))
        for (request_id,) in conn.execute(_FINISHED, _STATES).fetchall():
            if lifecycle.complete_if_done(conn, str(request_id)):
                report.completed.append(str(request_id))
        params = {**_STATES, "stale": stale}
        for request_id, urgent in conn.execute(_STUCK_ACCEPTED, params).fetchall():
            if ledger.rows_being_written(conn, str(request_id)):
                continue  # a live worker is streaming its ledger rows
            nudges.target(str(request_id), bool(urgent))
            ledger.mark_activity(conn, str(request_id), "target")
            report.retargeted.append(str(request_id))
        for request_id, urgent, channel in conn.execute(_STUCK_SENDING, params).fetchall():
            nudges.drain(str(request_id), Channel(str(channel)), bool(urgent))
            ledger.mark_activity(conn, str(request_id), str(channel))
            report.nudged.append((str(request_id), str(channel)))
    if report:
        log.info("reconciler sweep", extra={"expired": len(report.expired), "completed": len(report.completed),
                                            "retargeted": len(report.retargeted), "nudged": len(report.nudged)})
    return report


class Reconciler:
    """A daemon thread that sweeps every ``interval`` seconds (with jitter) until stopped."""

    def __init__(self, nudges: Nudges, *, interval: float, stale_seconds: float) -> None:
        self.nudges = nudges
        self.interval = interval
        self.stale_seconds = stale_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dispatcher-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        from dispatcher.db import get_pool
        from dispatcher.relay.sweep import sweep_relay

        while not self._stop.wait(self.interval * random.uniform(0.5, 1.0)):
            try:
                with get_pool().connection() as conn:
                    sweep(conn, nudges=self.nudges, stale_seconds=self.stale_seconds)
                    sweep_relay(conn)  # Contact Me's time rules (dispatcher/relay/sweep.py)
            except Exception as error:  # a dropped connection or a Redis restart: try again next time
                log.warning("reconciler sweep failed", extra={"error": type(error).__name__})


class ReconcilerMiddleware(Middleware):
    """Runs a :class:`Reconciler` in every worker process for as long as the worker runs."""

    def __init__(self, nudges: Nudges) -> None:
        self.nudges = nudges
        self.reconciler: Reconciler | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        settings = get_settings()  # read at boot: a worker process takes its settings from the environment
        self.reconciler = Reconciler(self.nudges, interval=settings.reconcile_seconds,
                                     stale_seconds=settings.stale_seconds)
        self.reconciler.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
            self.reconciler = None
