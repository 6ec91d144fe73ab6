"""The request stage: accept, target, write the ledger, start the fan-out.

Runs inside the ``distribute_request`` actor (and ``target_request``, which the reconciler sends for a
request a crash left behind) and can run any number of times for the same message:
acceptance is idempotent, targeting happens in one transaction that also moves the request to
``sending`` (so a crash mid-way leaves nothing behind), and a request already sending is only
nudged to continue its fan-out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from dispatcher import ledger, lifecycle
from dispatcher.agencies.jurisdiction import check_area_in_jurisdiction
from dispatcher.config import get_settings
from dispatcher.contract import is_request_id, max_area_km2_for, receive_request
from dispatcher.db import get_pool
from dispatcher.errors import InvalidRequest, RequestConflict
from dispatcher.lifecycle import State
from dispatcher.ops import metrics
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.match import match_area

log = logging.getLogger(__name__)

#: A request that writes at least this many ledger rows refreshes the ledger's planner statistics.
ANALYZE_AFTER_ROWS = 10_000


@dataclass(frozen=True)
class DistributeOutcome:
    """What the request stage did (for the actor and tests; counts stay internal)."""

    request_id: str | None
    state: str
    start_fanout: bool
    reason: str | None = None
    recipients_written: int = 0
    targeting_seconds: float = 0.0


def distribute(payload: Any) -> DistributeOutcome:
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
    return target(request.id)


def target(request_id: str) -> DistributeOutcome:
    """Target a stored request: write its ledger and move it to ``sending``, in one transaction.

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
    except InvalidRequest as error:
        with pool.connection() as conn:
            lifecycle.reject(conn, request.id, str(error))
        log.warning("request rejected", extra={"request_id": request.id, "reason": str(error)})
        return DistributeOutcome(request.id, State.REJECTED.value, False, str(error))

    started = time.perf_counter()
    with pool.connection() as conn, conn.transaction():
        # The row lock taken here is held until commit: the reconciler skips requests being targeted.
        if not lifecycle.transition(conn, request.id, State.TARGETING, from_={State.ACCEPTED, State.TARGETING}):
            current = lifecycle.load(conn, request.id)
            state = current[0].state.value if current else "unknown"
            return DistributeOutcome(request.id, state, state == State.SENDING.value)
        sink = ledger.delivery_sink(request.id)
        match_area(conn, area, sink=sink)
        lifecycle.transition(conn, request.id, State.SENDING, from_={State.TARGETING})
    elapsed = time.perf_counter() - started
    if sink.written >= ANALYZE_AFTER_ROWS:
        # Fresh statistics before the fan-out claims from these rows: with the table's statistics from
        # before the insert, the planner expects one row per request and claims became full scans.
        with pool.connection() as conn:
            conn.execute("ANALYZE deliveries")
    log.info("request targeted", extra={"request_id": request.id, "targeting_seconds": round(elapsed, 4)})
    metrics.record_targeting(elapsed, sink.written)
    return DistributeOutcome(request.id, State.SENDING.value, True, None, sink.written, elapsed)
