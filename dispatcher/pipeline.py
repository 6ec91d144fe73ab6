"""The request stage: accept, target, write the ledger, start the fan-out.

Runs inside the ``distribute_request`` actor (and ``target_request``, which the reconciler sends for a
request a crash left behind) and can run any number of times for the same message:
acceptance is idempotent, targeting streams the ledger in committed chunks (the fan-out starts after
the first) and moves the request to ``sending`` only after the last, and a request already sending is
only nudged to continue its fan-out. A crash mid-way leaves the request ``targeting`` with some rows
written; the re-run writes the rest (rows are unique per request, resident and channel).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher import ledger, lifecycle
from dispatcher.agencies.jurisdiction import check_area_in_jurisdiction
from dispatcher.config import get_settings
from dispatcher.contract import is_request_id, max_area_km2_for, receive_request
from dispatcher.db import get_pool
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidRequest, RequestConflict
from dispatcher.lifecycle import State
from dispatcher.ops import metrics
from dispatcher.targeting.area import Area, parse_area
from dispatcher.targeting.match import match_area, plan_match

log = logging.getLogger(__name__)

#: A request that writes at least this many ledger rows refreshes the ledger's planner statistics.
ANALYZE_AFTER_ROWS = 10_000

#: Called once the first ledger rows of a request are committed (the actor starts the fan-out).
FirstRows = Callable[[], None]


@dataclass(frozen=True)
class DistributeOutcome:
    """What the request stage did (for the actor and tests; counts stay internal)."""

    request_id: str | None
    state: str
    start_fanout: bool
    reason: str | None = None
    recipients_written: int = 0
    targeting_seconds: float = 0.0


def distribute(payload: Any, on_first_rows: FirstRows | None = None) -> DistributeOutcome:
    """Accept and target one request message; never raises for bad input (it is recorded instead)."""
    pool = get_pool()
    # An id is recorded or announced only if it follows the contract (a 5 MB id must not reach the stream).
    request_id = payload.get("id") if isinstance(payload, dict) and is_request_id(payload.get("id")) else None
    try:
        request = receive_request(payload)
    except InvalidRequest as error:
        with pool.connection() as conn, conn.transaction():
            lifecycle.record_rejection(conn, request_id, str(error))
            if request_id is not None:
                # Rejected and announced (id, state, time) only if no request holds the id yet: a malformed
                # message reusing a stored request's id neither changes nor announces that request.
                lifecycle.reject_unstored(conn, request_id, str(error))
        log.warning("request rejected", extra={"request_id": request_id, "reason": str(error)})
        return DistributeOutcome(request_id, State.REJECTED.value, False, str(error))
    with pool.connection() as conn:
        try:
            stored = lifecycle.accept(conn, request)
        except RequestConflict as error:
            log.error("conflicting re-publication", extra={"request_id": request.id})
            return DistributeOutcome(request.id, "conflict", False, str(error))
    if stored.state in lifecycle.FINAL_STATES:
        return DistributeOutcome(request.id, stored.state.value, False, stored.reason)
    if stored.state is State.SENDING:
        return DistributeOutcome(request.id, stored.state.value, True)
    return target(request.id, on_first_rows)


def target(request_id: str, on_first_rows: FirstRows | None = None) -> DistributeOutcome:
    """Target a stored request: stream its ledger rows, then move it to ``sending``.

    ``on_first_rows`` is called once, right after the first ledger rows are committed (the actor starts
    the fan-out there, while the rest is still being written); the outcome's ``start_fanout`` is then
    false.

    Called right after acceptance and, for a request left ``accepted`` by a crash, by the reconciler's
    ``target_request`` message (which carries the id only: the payload is read back from the database).
    A request whose response window has ended meanwhile is expired instead.
    """
    settings = get_settings()
    pool = get_pool()
    with pool.connection() as conn:
        loaded = lifecycle.load(conn, request_id)
        if loaded is None:
            log.warning("targeting an unknown request", extra={"request_id": request_id})
            return DistributeOutcome(request_id, "unknown", False)
        stored, request = loaded
        if stored.state in lifecycle.FINAL_STATES:
            return DistributeOutcome(request_id, stored.state.value, False, stored.reason)
        if stored.state is State.SENDING:
            return DistributeOutcome(request_id, stored.state.value, True)
        if not lifecycle.window_open(conn, request_id):
            lifecycle.expire(conn, request_id)
            log.info("request expired before targeting", extra={"request_id": request_id})
            return DistributeOutcome(request_id, State.EXPIRED.value, False, "response window ended")

    try:
        area = parse_area(request.area.model_dump(), max_vertices=settings.max_area_vertices,
                          max_area_km2=max_area_km2_for(request, max_area_km2=settings.max_area_km2,
                                                        video_max_area_km2=settings.video_max_area_km2),
                          max_bytes=settings.max_area_bytes)
        with pool.connection() as conn:  # an unknown agency, or an area outside its jurisdiction
            check_area_in_jurisdiction(conn, request.agency.id, area, settings)
            plan_match(conn, area)  # or too many residents along its boundary, by the statistics
    except InvalidRequest as error:
        with pool.connection() as conn:
            lifecycle.reject(conn, request.id, str(error))
        log.warning("request rejected", extra={"request_id": request.id, "reason": str(error)})
        return DistributeOutcome(request.id, State.REJECTED.value, False, str(error))

    started = time.perf_counter()
    with pool.connection() as conn:
        conn.autocommit = True  # each ledger chunk commits on its own: the fan-out starts on the first
        try:
            return _stream_ledger(conn, request.id, area, on_first_rows, started)
        finally:
            if not conn.closed:
                conn.autocommit = False  # the pool hands the connection on as it got it


def _stream_ledger(conn: Conn, request_id: str, area: Area, on_first_rows: FirstRows | None,
                   started: float) -> DistributeOutcome:
    """Write the ledger in committed chunks under the request's writer lock, then move it to ``sending``.

    The request stays ``targeting`` while rows are written: fan-out already drains what is committed,
    but nothing completes it before the last chunk is in. A crash leaves it ``targeting`` with its
    writer lock gone; the reconciler sends it here again and the unique rows make the re-run harmless.
    """
    with ledger.writing_rows(conn, request_id) as holding:
        if not holding:  # another worker is writing this request's rows and starts its fan-out
            return DistributeOutcome(request_id, State.TARGETING.value, False)
        if not lifecycle.transition(conn, request_id, State.TARGETING, from_={State.ACCEPTED, State.TARGETING}):
            state = lifecycle.current_state(conn, request_id)
            value = state.value if state else "unknown"
            return DistributeOutcome(request_id, value, state is State.SENDING)
        stream = _FanoutOnFirstRows(conn, on_first_rows)
        sink = ledger.delivery_sink(request_id, on_commit=stream)
        try:
            match_area(conn, area, sink=sink)
        finally:
            sink.close(conn)
        if not lifecycle.transition(conn, request_id, State.SENDING, from_={State.TARGETING}):
            # Expired (or rejected) while the rows were written: nothing written now may stay pending.
            ledger.expire_pending(conn, request_id)
            state = lifecycle.current_state(conn, request_id)
            return DistributeOutcome(request_id, state.value if state else "unknown", False)
    elapsed = time.perf_counter() - started
    if sink.written >= ANALYZE_AFTER_ROWS:
        conn.execute("ANALYZE deliveries")
    log.info("request targeted", extra={"request_id": request_id, "targeting_seconds": round(elapsed, 4)})
    metrics.record_targeting(elapsed, sink.written)
    return DistributeOutcome(request_id, State.SENDING.value, not stream.started, None, sink.written, elapsed)


class _FanoutOnFirstRows:
    """The sink's commit hook: starts the fan-out once rows are claimable, and refreshes the ledger's
    planner statistics once the request is big enough for stale ones to matter."""

    def __init__(self, conn: Conn, on_first_rows: FirstRows | None) -> None:
        self.conn = conn
        self.on_first_rows = on_first_rows
        self.started = False
        self.analyzed = False

    def __call__(self, written: int) -> None:
        if written > 0 and not self.started and self.on_first_rows is not None:
            self.on_first_rows()
            self.started = True
        if written >= ANALYZE_AFTER_ROWS and not self.analyzed:
            # With the statistics from before the insert, the planner expects one row per request and
            # claims became full scans; the fan-out claims while the rest is still being written.
            self.conn.execute("ANALYZE deliveries")
            self.analyzed = True
