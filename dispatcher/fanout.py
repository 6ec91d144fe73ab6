"""Fan-out: lease a batch of ledger rows, check residents' settings again, send, record outcomes.

A worker drains one (request, channel) for a bounded time, then hands the rest on as a new message,
so one county-wide request never holds a worker while smaller ones wait. Everything a worker knows
is in the ledger; it can die at any line and another one finishes its batch when the lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from dispatcher import ledger, lifecycle
from dispatcher.channels.base import Channel as Sender
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.push import PushChannel
from dispatcher.channels.result import SendResult
from dispatcher.config import Settings, get_settings
from dispatcher.contract import PublishedRequest
from dispatcher.db import get_pool
from dispatcher.ledger import Channel, Outcome
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


@dataclass
class DrainReport:
    """What one drain did, for metrics and logs (counts only)."""

    batches: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    more_work: bool = False
    retry_in: float | None = None
    quota_exceeded: bool = False
    finished: bool = False


def _count(report: DrainReport, outcomes: dict[int, Outcome]) -> None:
    for outcome in outcomes.values():
        report.outcomes[outcome.status.value] = report.outcomes.get(outcome.status.value, 0) + 1


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


def drain(request_id: str, channel: Channel, *, budget_seconds: float | None = None) -> DrainReport:
    """Send pending rows of one request on one channel until none are left or the budget is spent.

    Per batch: claim under a lease, wait for the shared rate budget, renew the lease (dropping rows
    lost to another worker meanwhile), send, record. A crash between the provider accepting and the
    ledger recording re-sends at most that one batch once the lease expires.
    """
    from dispatcher.channels.ratelimit import acquire

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
    deadline = time.monotonic() + (DRAIN_SECONDS if budget_seconds is None else budget_seconds)
    while time.monotonic() < deadline:
        with pool.connection() as conn:
            if not lifecycle.window_open(conn, request_id):
                return _expire(conn, request_id, report)
            ids = ledger.claim_batch(conn, request_id, channel, size=size, owner=owner,
                                     lease_seconds=settings.lease_seconds)
        if not ids:
            break
        acquire(channel, len(ids))
        with pool.connection() as conn:
            ids = ledger.confirm_lease(conn, request_id, channel, ids, owner=owner,
                                       lease_seconds=settings.lease_seconds)
        if not ids:
            continue
        result = _send_batch(channel, request, stored.respond_until, ids)
        outcomes, retry = result.outcomes, result.retry
        with pool.connection() as conn:
            ledger.record_outcomes(conn, request_id, channel, outcomes)
            metrics.record_ledger_outcomes(channel.value, outcomes)
            if retry:
                ledger.release(conn, request_id, channel, retry, retry_in_seconds=_wait(result),
                               reason="provider_retry")
                metrics.record_retry(channel.value, len(retry))
        _after_recording(channel, result)
        report.batches += 1
        _count(report, outcomes)
        if retry:
            report.retry_in = _wait(result)
        if result.quota_exceeded:
            # The provider wants the whole fleet to wait; temporary failures alone do not stop the drain.
            report.quota_exceeded = True
            break
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
