"""Fan-out: lease a batch of ledger rows, check residents' settings again, send, record outcomes.

A worker drains one (request, channel) for a bounded time, then hands the rest on as a new message,
so one county-wide request never holds a worker while smaller ones wait. Everything a worker knows
is in the ledger; it can die at any line and another one finishes its batch when the lease expires.

A far provider answers in tens to hundreds of milliseconds, so one batch at a time would leave a
worker waiting most of the time. A drain keeps several batches in flight: it claims, waits for the
shared rate budget and renews the lease on its own thread, then hands each batch to a sending thread
that sends and records it. How many batches a process keeps in flight per channel follows Little's
law (:class:`~dispatcher.channels.concurrency.BatchGate`: rate × the time a batch takes ÷ its size),
bounded, so a killed worker re-sends at most those batches.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import psycopg

from dispatcher import ledger, lifecycle
from dispatcher.channels.base import Channel as Sender
from dispatcher.channels.concurrency import URGENT_EXTRA, BatchGate, Sizing
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.push import PushChannel
from dispatcher.channels.result import SendResult
from dispatcher.config import Settings, get_settings
from dispatcher.contract import PublishedRequest
from dispatcher.db import get_pool
from dispatcher.ledger import Channel
from dispatcher.lifecycle import State
from dispatcher.ops import metrics

log = logging.getLogger(__name__)

#: How long one message may drain a request before passing the rest on to the back of the queue
#: (the longest a small request waits for a worker thread behind a county-wide one).
DRAIN_SECONDS = 10.0
#: How often a drain that caught up with a request still being targeted looks for new rows.
TARGETING_POLL_SECONDS = 0.5
#: Wait before retrying residents a provider could not take, when it gives no Retry-After.
DEFAULT_RETRY_SECONDS = 5.0
#: Rows held by quiet hours that may go within this many seconds are followed by a delayed drain (the
#: morning's spread); longer holds end the drain and the reconciler wakes the request when they end.
FOLLOW_HOLDS_SECONDS = 300.0
#: Most batches in flight per worker process and channel: bounds the rows a process holds under lease.
MAX_BATCHES_IN_FLIGHT: dict[Channel, int] = {Channel.PUSH: 24, Channel.EMAIL: 24}
#: The time one batch is assumed to take before any has been timed.
INITIAL_BATCH_SECONDS = 0.2
#: A lease younger than this when its batch is handed to a sending thread is not renewed: it still covers
#: the batch deadlines (lease minus the record margin), and a renewal is one more update of every row.
FRESH_LEASE_SECONDS = 1.0
#: Pauses between attempts to record a sent batch while PostgreSQL is busy or away (doubling up to the most).
RECORD_FIRST_PAUSE_SECONDS = 0.1
RECORD_MAX_PAUSE_SECONDS = 5.0


def worker_identity() -> str:
    """A lease owner name: host, process and thread (no personal data)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:6]}"


#: The sender of each ledger channel; a new channel is one module and one line here.
CHANNELS: dict[Channel, Callable[[Settings], Sender[Any]]] = {
    Channel.PUSH: PushChannel,
    Channel.EMAIL: EmailChannel,
}


@cache
def _sender_for(channel: Channel, settings: Settings) -> Sender[Any]:
    return CHANNELS[channel](settings)


def sender(channel: Channel) -> Sender[Any]:
    """The process's sender for ``channel`` with the current settings, made on first use."""
    return _sender_for(channel, get_settings())


_gates: dict[tuple[int, Channel, float, int], BatchGate] = {}
#: The last resident id each (process, request, channel) claimed: the next claim starts above it.
_cursors: dict[tuple[int, str, Channel], int] = {}
#: Cursors kept at most (one per request and channel being sent by this process; old ones are dropped).
MAX_CURSORS = 1_000
_senders: dict[int, ThreadPoolExecutor] = {}
_shared = threading.Lock()


def batch_gate(channel: Channel, per_second: float, batch_size: int) -> BatchGate:
    """The process's gate for one channel at a rate and batch size (made again in a forked child)."""
    key = (os.getpid(), channel, per_second, batch_size)
    with _shared:
        gate = _gates.get(key)
        if gate is None:
            sizing = Sizing(per_second, minimum=1, maximum=MAX_BATCHES_IN_FLIGHT[channel], unit=batch_size)
            gate = _gates[key] = BatchGate(sizing, INITIAL_BATCH_SECONDS)
        return gate


def _sending_threads() -> ThreadPoolExecutor:
    """Threads that send and record batches for every drain of the process (one per batch in flight)."""
    with _shared:
        executor = _senders.get(os.getpid())
        if executor is None:
            # One thread for every batch the gates let through, urgent reserves included: an urgent batch
            # never waits in this pool's queue behind a county's.
            executor = _senders[os.getpid()] = ThreadPoolExecutor(
                max_workers=sum(MAX_BATCHES_IN_FLIGHT.values()) + URGENT_EXTRA * len(MAX_BATCHES_IN_FLIGHT),
                thread_name_prefix="dispatcher-send")
        return executor


def _claim(conn: Any, request_id: str, channel: Channel, *, size: int, owner: str, lease_seconds: int) -> list[int]:
    """Claim the next batch above this process's cursor for the request and channel, going back to the
    lowest id once nothing is left above it (rows written behind the cursor, rows handed back)."""
    key = (os.getpid(), request_id, channel)
    after = _cursors.get(key, 0)
    ids = ledger.claim_batch(conn, request_id, channel, size=size, owner=owner, lease_seconds=lease_seconds,
                             after=after)
    if not ids and after > 0:
        ids = ledger.claim_batch(conn, request_id, channel, size=size, owner=owner, lease_seconds=lease_seconds)
    if len(_cursors) >= MAX_CURSORS:
        _cursors.clear()
    _cursors[key] = ids[-1] if ids else 0
    return ids


@dataclass
class DrainReport:
    """What one drain did, for metrics and logs (counts only)."""

    batches: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    more_work: bool = False
    retry_in: float | None = None
    quota_exceeded: bool = False
    finished: bool = False


def _count(report: DrainReport, result: SendResult) -> None:
    report.batches += 1
    if result.problems:
        log.warning("provider calls failed in a batch", extra={
            "problems": result.problems, "calls": result.calls, "inline_retries": result.inline_retries,
            "handed_back": len(result.retry), "accepted": result.accepted})
    for outcome in result.outcomes.values():
        report.outcomes[outcome.status.value] = report.outcomes.get(outcome.status.value, 0) + 1
    if result.retry:
        report.retry_in = _wait(result)
    if result.quota_exceeded:
        # The provider wants the whole fleet to wait; temporary failures alone do not stop the drain.
        report.quota_exceeded = True


def _wait(result: SendResult) -> float:
    """How long handed-back residents wait: what the provider said, else the default."""
    return result.retry_after or DEFAULT_RETRY_SECONDS


@dataclass
class BatchTimes:
    """Where one batch's time went, in seconds (logged at DEBUG: how long a first message waited, and on what)."""

    gate: float = 0.0  #: waiting for room in the batch gate
    claim: float = 0.0  #: claiming the rows
    rate: float = 0.0  #: waiting for the shared rate budget
    handed_at: float = 0.0  #: monotonic time the batch was handed to a sending thread
    queued: float = 0.0  #: waiting for a sending thread
    eligible: float = 0.0  #: the last-moment eligibility check
    send: float = 0.0  #: the provider calls
    record: float = 0.0  #: writing the outcomes


def _send_batch(channel: Channel, request: PublishedRequest, respond_until: datetime,
                resident_ids: list[int], times: BatchTimes | None = None) -> SendResult:
    """Check eligibility at the last moment and send; touches nothing but the provider after the send.

    Anything that could fail between the provider accepting and the ledger recording widens the window
    in which a crash causes a duplicate, so retiring tokens and slowing the fleet happen after recording.
    The returned outcomes include the residents skipped by the eligibility check.
    """
    times = times or BatchTimes()
    sending = sender(channel)
    started = time.monotonic()
    with get_pool().connection() as conn:
        batch = sending.eligible(conn, request.id, resident_ids)
    checked = time.monotonic()
    times.eligible = checked - started
    result: SendResult
    if batch.recipients:
        with metrics.provider_timer(sending.provider):
            result = sending.send(request, respond_until, batch.recipients)
    else:
        result = SendResult()
    times.send = time.monotonic() - checked
    result.outcomes.update(batch.skipped)
    return result


def _after_recording(channel: Channel, result: SendResult) -> None:
    """Side effects of a batch once its outcomes are safe in the ledger; failures here only log."""
    from dispatcher.channels.ratelimit import slow_down

    try:
        sender(channel).after_recording(result)
        if result.quota_exceeded:
            slow_down(channel, _wait(result))
    except Exception as error:  # the batch is recorded; a token retired later or a missed pause is harmless
        log.warning("after-send bookkeeping failed", extra={"channel": channel.value,
                                                             "error": type(error).__name__})


def _expire(conn: Any, request_id: str, report: DrainReport) -> DrainReport:
    expired = lifecycle.expire(conn, request_id)
    log.info("request expired", extra={"request_id": request_id, "rows_expired": expired})
    report.finished = True
    return report


def _record(channel: Channel, request_id: str, result: SendResult, *, patience_seconds: float) -> None:
    """Write a sent batch's outcomes, trying again while PostgreSQL is slow or unreachable.

    Why so stubborn: the provider has taken these messages. Rows left leased are claimed again when the
    lease ends, and every resident of the batch would be notified twice; so a busy pool, a dropped
    connection or a deadlock is waited out (up to ``patience_seconds``, about a lease) rather than
    failing the batch. Only a failure that outlasts that gives up, and then at most this batch repeats.
    """
    give_up = time.monotonic() + patience_seconds
    pause = RECORD_FIRST_PAUSE_SECONDS
    while True:
        try:
            with get_pool().connection(timeout=max(1.0, give_up - time.monotonic())) as conn:
                ledger.record_outcomes(conn, request_id, channel, result.outcomes)
                if result.retry:
                    ledger.release(conn, request_id, channel, result.retry, retry_in_seconds=_wait(result),
                                   reason="provider_retry")
            break
        except psycopg.OperationalError as error:  # pool timeout, lost connection, deadlock: all transient
            if time.monotonic() + pause >= give_up:
                raise
            log.warning("recording a sent batch failed; trying again",
                        extra={"request_id": request_id, "channel": channel.value, "error": type(error).__name__})
            metrics.record_ledger_write_retry(channel.value)
            time.sleep(pause)
            pause = min(pause * 2, RECORD_MAX_PAUSE_SECONDS)
    metrics.record_ledger_outcomes(channel.value, result.outcomes)
    if result.retry:
        metrics.record_retry(channel.value, len(result.retry))


def _send_and_record(channel: Channel, request: PublishedRequest, respond_until: datetime, ids: list[int],
                     gate: BatchGate, entered: float, times: BatchTimes | None = None) -> SendResult:
    """On a sending thread: send one leased batch, record its outcomes, then leave the gate with the time
    the batch held its place (without the wait for the rate budget)."""
    times = times or BatchTimes(handed_at=time.monotonic())
    times.queued = time.monotonic() - times.handed_at
    took: float | None = None
    try:
        result = _send_batch(channel, request, respond_until, ids, times)
        recording = time.monotonic()
        _record(channel, request.id, result, patience_seconds=float(get_settings().lease_seconds))
        times.record = time.monotonic() - recording
        took = time.monotonic() - entered
        _after_recording(channel, result)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch sent", extra={"request_id": request.id, "channel": channel.value, "rows": len(ids),
                                           "accepted": result.accepted,
                                           "seconds": {k: round(v, 4) for k, v in vars(times).items()
                                                       if k != "handed_at"}})
        return result
    finally:
        gate.leave(took)


def drain(request_id: str, channel: Channel, *, budget_seconds: float | None = None) -> DrainReport:
    """Send pending rows of one request on one channel until none are left or the budget is spent.

    Per batch: claim under a lease, wait for the shared rate budget, renew the lease (dropping rows
    lost to another worker meanwhile), then send and record on a sending thread while the next batch
    is claimed, up to the process's batches in flight. A crash between the provider accepting and the
    ledger recording re-sends at most the batches in flight once their leases expire.
    """
    from dispatcher.channels.ratelimit import acquire, rate

    settings = get_settings()
    pool = get_pool()
    owner = worker_identity()
    report = DrainReport()
    with pool.connection() as conn:
        loaded = lifecycle.load(conn, request_id)
    if loaded is None:
        log.warning("fan-out for an unknown request", extra={"request_id": request_id})
        return report
    stored, request = loaded
    if stored.state not in (State.TARGETING, State.SENDING):  # targeting commits its rows as it goes
        return report
    size = settings.push_batch_size if channel is Channel.PUSH else settings.email_batch_size
    gate = batch_gate(channel, rate(channel), size)
    deadline = time.monotonic() + (DRAIN_SECONDS if budget_seconds is None else budget_seconds)
    running: set[Future[SendResult]] = set()
    failures: list[BaseException] = []

    def collect(block: bool) -> None:
        """Count the batches that finished (all of them when ``block``); keep the first failure."""
        while running:
            done, _ = wait(running, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if not done:
                return
            for future in done:
                running.discard(future)
                try:
                    _count(report, future.result())
                except Exception as error:  # its rows stay leased: another worker sends them after expiry
                    failures.append(error)

    window_closed = exhausted = False
    try:
        while time.monotonic() < deadline and not failures and not report.quota_exceeded:
            collect(block=False)
            times = BatchTimes()
            asked = time.monotonic()
            if not gate.enter(deadline - time.monotonic(), urgent=stored.urgent):
                break
            entered, handed = time.monotonic(), False
            times.gate = entered - asked
            try:
                with pool.connection() as conn:
                    if not lifecycle.window_open(conn, request_id):
                        window_closed = True
                        break
                    ids = _claim(conn, request_id, channel, size=size, owner=owner,
                                 lease_seconds=settings.lease_seconds)
                claimed_at = time.monotonic()
                times.claim = claimed_at - entered
                if not ids:
                    exhausted = True
                    break
                waited = times.rate = acquire(channel, len(ids))
                if time.monotonic() - claimed_at > FRESH_LEASE_SECONDS:  # a long wait for the rate budget
                    with pool.connection() as conn:
                        ids = ledger.confirm_lease(conn, request_id, channel, ids, owner=owner,
                                                   lease_seconds=settings.lease_seconds)
                if not ids:
                    continue
                times.handed_at = time.monotonic()
                running.add(_sending_threads().submit(_send_and_record, channel, request, stored.respond_until,
                                                      ids, gate, entered + waited, times))
                handed = True
            finally:
                if not handed:
                    gate.leave()
    finally:
        collect(block=True)
    if failures:
        raise failures[0]
    if window_closed:
        with pool.connection() as conn:
            return _expire(conn, request_id, report)
    if not exhausted and not report.quota_exceeded and report.retry_in is None:
        # The budget ran out with batches still coming: go on at once (at the back of the queue), without
        # counting what is left, which reads every pending row of the request.
        report.more_work = True
        return report
    _cursors.pop((os.getpid(), request_id, channel), None)
    with pool.connection() as conn:
        if not lifecycle.window_open(conn, request_id):
            return _expire(conn, request_id, report)
        work = ledger.pending_work(conn, request_id, channel)
        hold_ends_soon = work.next_hold_end_seconds is not None and work.next_hold_end_seconds <= FOLLOW_HOLDS_SECONDS
        if work.claimable == 0 and work.leased == 0 and not hold_ends_soon:
            if lifecycle.complete_if_done(conn, request_id):
                log.info("request completed", extra={"request_id": request_id})
            if lifecycle.current_state(conn, request_id) is not State.TARGETING:
                report.finished = True
                return report
            # Caught up with targeting, which is still writing rows: look again shortly.
            report.more_work, report.retry_in = True, TARGETING_POLL_SECONDS
            return report
    report.more_work = True
    if work.claimable > 0 and not report.quota_exceeded:
        report.retry_in = None  # rows are ready now: continue at once (at the back of the queue)
    if report.retry_in is None and work.claimable == 0:
        waits = [w for w in (work.next_lease_expiry_seconds, work.next_hold_end_seconds) if w is not None]
        report.retry_in = min(waits) + 1.0 if waits else None
    return report
