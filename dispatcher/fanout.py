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

from dispatcher import ledger, lifecycle
from dispatcher.channels.base import Channel as Sender
from dispatcher.channels.concurrency import BatchGate, Sizing
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
            executor = _senders[os.getpid()] = ThreadPoolExecutor(
                max_workers=sum(MAX_BATCHES_IN_FLIGHT.values()), thread_name_prefix="dispatcher-send")
        return executor


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


def _send_batch(channel: Channel, request: PublishedRequest, respond_until: datetime,
                resident_ids: list[int]) -> SendResult:
    """Check eligibility at the last moment and send; touches nothing but the provider after the send.

    Anything that could fail between the provider accepting and the ledger recording widens the window
    in which a crash causes a duplicate, so retiring tokens and slowing the fleet happen after recording.
    The returned outcomes include the residents skipped by the eligibility check.
    """
    sending = sender(channel)
    with get_pool().connection() as conn:
        batch = sending.eligible(conn, request.id, resident_ids)
    result: SendResult
    if batch.recipients:
        with metrics.provider_timer(sending.provider):
            result = sending.send(request, respond_until, batch.recipients)
    else:
        result = SendResult()
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


def _send_and_record(channel: Channel, request: PublishedRequest, respond_until: datetime, ids: list[int],
                     gate: BatchGate, entered: float) -> SendResult:
    """On a sending thread: send one leased batch, record its outcomes, then leave the gate with the time
    the batch held its place (without the wait for the rate budget)."""
    took: float | None = None
    try:
        result = _send_batch(channel, request, respond_until, ids)
        outcomes, retry = result.outcomes, result.retry
        with get_pool().connection() as conn:
            ledger.record_outcomes(conn, request.id, channel, outcomes)
            metrics.record_ledger_outcomes(channel.value, outcomes)
            if retry:
                ledger.release(conn, request.id, channel, retry, retry_in_seconds=_wait(result),
                               reason="provider_retry")
                metrics.record_retry(channel.value, len(retry))
        took = time.monotonic() - entered
        _after_recording(channel, result)
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

    window_closed = False
    try:
        while time.monotonic() < deadline and not failures and not report.quota_exceeded:
            collect(block=False)
            if not gate.enter(deadline - time.monotonic()):
                break
            entered, handed = time.monotonic(), False
            try:
                with pool.connection() as conn:
                    if not lifecycle.window_open(conn, request_id):
                        window_closed = True
                        break
                    ids = ledger.claim_batch(conn, request_id, channel, size=size, owner=owner,
                                             lease_seconds=settings.lease_seconds)
                if not ids:
                    break
                waited = acquire(channel, len(ids))
                with pool.connection() as conn:
                    ids = ledger.confirm_lease(conn, request_id, channel, ids, owner=owner,
                                               lease_seconds=settings.lease_seconds)
                if not ids:
                    continue
                running.add(_sending_threads().submit(_send_and_record, channel, request, stored.respond_until,
                                                      ids, gate, entered + waited))
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
