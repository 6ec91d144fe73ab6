"""The fan-out under crashes: leases that expire, leases lost while stalled, the window closing mid-way."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from dispatcher import fanout, ledger, lifecycle
from dispatcher.channels import ratelimit
from dispatcher.config import Settings, set_settings
from dispatcher.contract import parse_request
from dispatcher.ledger import Channel
from dispatcher.lifecycle import State
from dispatcher.pipeline import distribute
from tests.factories import add_resident, request_payload

Conn = psycopg.Connection[Any]
INSIDE = (40.015, -105.273)


def _town(db: Conn, n: int) -> None:
    for i in range(1, n + 1):
        add_resident(db, i, INSIDE[0] + i * 1e-5, INSIDE[1], email=f"r{i}@example.test", tokens=[f"tok-{i}"])


def _statuses(db: Conn, request_id: str, channel: str) -> Counter[str]:
    return Counter(str(r[0]) for r in db.execute(
        "SELECT status FROM deliveries WHERE request_id = %s AND channel = %s", (request_id, channel)))


def test_a_batch_left_by_a_killed_worker_is_finished_by_another_once_its_lease_expires(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, 6)
    outcome = distribute(request_payload("lease-1"))
    assert outcome.state == "sending" and outcome.recipients_written == 12
    # A worker claims a batch and dies before sending anything.
    dead = ledger.claim_batch(db, "lease-1", Channel.PUSH, size=4, owner="dead-worker", lease_seconds=60)
    assert len(dead) == 4
    report = fanout.drain("lease-1", Channel.PUSH, budget_seconds=5)
    # The drain sends what it can and asks to come back when the dead worker's lease runs out.
    assert report.more_work and report.retry_in is not None and 30 < report.retry_in <= 61
    assert _statuses(db, "lease-1", "push") == Counter({"sent": 2, "pending": 4})
    db.execute("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE lease_owner = 'dead-worker'")
    report = fanout.drain("lease-1", Channel.PUSH, budget_seconds=5)
    assert report.finished
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({f"tok-{i}": 1 for i in range(1, 7)})
    # A redelivered drain message sends nothing more.
    fanout.drain("lease-1", Channel.PUSH, budget_seconds=5)
    assert len(sandbox.records("fcm")) == 6


def test_rows_lost_to_another_worker_while_stalled_are_not_sent(db: Conn, engine: Settings) -> None:
    _town(db, 3)
    distribute(request_payload("stall-1"))
    mine = ledger.claim_batch(db, "stall-1", Channel.EMAIL, size=3, owner="slow", lease_seconds=1)
    time.sleep(1.1)  # stalled past the lease: another worker takes two of the rows
    theirs = ledger.claim_batch(db, "stall-1", Channel.EMAIL, size=2, owner="fast", lease_seconds=30)
    kept = ledger.confirm_lease(db, "stall-1", Channel.EMAIL, mine, owner="slow", lease_seconds=30)
    assert theirs == mine[:2] and kept == mine[2:]


def test_a_backlog_message_after_the_window_ends_sends_nothing_and_expires_the_rest(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, 4)
    published = datetime.now(UTC) - timedelta(days=59, hours=23, minutes=59)
    distribute(request_payload("late-1", published=published))
    assert lifecycle.window_open(db, "late-1")
    # The clock moves past the end of the window while the fan-out waits in a backlog.
    db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second' WHERE id = 'late-1'")
    assert ledger.claim_batch(db, "late-1", Channel.PUSH, size=10, owner="w", lease_seconds=5) == []
    report = fanout.drain("late-1", Channel.PUSH)
    assert report.finished and report.batches == 0
    sandbox.flush()
    assert sandbox.records("fcm") == [] and sandbox.records("sendgrid") == []
    assert _statuses(db, "late-1", "push") == Counter({"expired": 4})
    assert _statuses(db, "late-1", "email") == Counter({"expired": 4})
    state = db.execute("SELECT state, reason FROM community_requests WHERE id = 'late-1'").fetchone()
    assert state == ("expired", "response window ended")


@pytest.mark.parametrize("channel", [Channel.PUSH, Channel.EMAIL])
def test_a_batch_whose_window_ends_while_it_waits_to_be_sent_is_expired_and_never_sent(
    db: Conn, engine: Settings, sandbox: Any, channel: Channel
) -> None:
    _town(db, 3)
    distribute(request_payload("closing-1"))
    db.execute("UPDATE community_requests SET respond_until = now() + interval '1 second' WHERE id = 'closing-1'")
    # The fleet is paused past the end of the window: the batch is claimed while the window is open,
    # then waits for the shared rate budget until after it has closed.
    ratelimit.slow_down(channel, 2.0)
    report = fanout.drain("closing-1", channel)
    assert report.finished
    sandbox.flush()
    assert sandbox.records("fcm") == [] and sandbox.records("sendgrid") == []
    assert _statuses(db, "closing-1", channel.value) == Counter({"expired": 3})
    reasons = {r[0] for r in db.execute("SELECT reason FROM deliveries WHERE request_id = 'closing-1'")}
    assert reasons == {ledger.WINDOW_ENDED}


def test_a_request_accepted_before_the_window_ended_is_expired_instead_of_targeted(db: Conn, engine: Settings) -> None:
    _town(db, 2)
    payload = request_payload("late-2")
    lifecycle.accept(db, parse_request(payload))
    db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second' WHERE id = 'late-2'")
    outcome = distribute(payload)
    assert outcome.state == State.EXPIRED.value and not outcome.start_fanout
    assert db.execute("SELECT count(*) FROM deliveries WHERE request_id = 'late-2'").fetchone() == (0,)


def test_a_provider_storm_releases_the_batch_for_later_and_loses_no_one(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, 5)
    distribute(request_payload("storm-1"))
    # More 503s in a row than the channel retries inline: the batch goes back to the ledger for later.
    sandbox.faults.update("sendgrid", burst_count=3, burst_status=503)
    report = fanout.drain("storm-1", Channel.EMAIL)
    assert report.more_work and report.retry_in is not None and report.retry_in >= 5
    assert _statuses(db, "storm-1", "email") == Counter({"pending": 5})
    db.execute("UPDATE deliveries SET lease_until = now() WHERE request_id = 'storm-1'")
    assert fanout.drain("storm-1", Channel.EMAIL).finished
    sandbox.flush()
    assert Counter(r["email"] for r in sandbox.records("sendgrid")) == Counter(
        {f"r{i}@example.test": 1 for i in range(1, 6)})


def test_a_county_wide_request_does_not_hold_back_a_small_one(
    db: Conn, engine: Settings, sandbox: Any, worker: Any, monkeypatch: Any
) -> None:
    from dispatcher.publishing import publish
    from tests.test_end_to_end import wait_for_state

    monkeypatch.setattr(fanout, "DRAIN_SECONDS", 0.5)
    _town(db, 400)
    sandbox.faults.update("fcm", latency_ms=20)
    sandbox.faults.update("sendgrid", latency_ms=200)
    # Slow enough that the county request is still sending when the small one is done, however many
    # batches a worker keeps in flight: the shared rate limit serves both in turn.
    set_settings(engine.with_(push_batch_size=10, email_batch_size=10, push_rate_per_minute=2_400,
                              email_rate_per_minute=2_400))
    try:
        big = publish(request_payload("county-1"))
        time.sleep(1.0)  # the county request's drains occupy every worker thread
        small_area = {"type": "Polygon", "coordinates": [[[-105.2731, 40.0149], [-105.2729, 40.0149],
                                                          [-105.2729, 40.0152], [-105.2731, 40.0152],
                                                          [-105.2731, 40.0149]]]}
        small = publish(request_payload("small-1", area=small_area))
        assert wait_for_state(db, small, {"completed"}, timeout=30) == "completed"
        big_state = db.execute("SELECT state FROM community_requests WHERE id = %s", (big,)).fetchone()
        assert big_state == ("sending",)
    finally:
        sandbox.faults.reset()
        set_settings(engine)


def test_a_sent_batch_is_recorded_even_when_postgresql_refuses_the_first_attempts(
    db: Conn, engine: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider took the batch: if recording failed, its rows would be claimed and sent again once the
    lease ends. A lock held elsewhere makes the first attempts time out (a real PostgreSQL error, as a
    deadlock or a dropped connection would be); the outcomes are still written once it is released."""
    import threading

    from dispatcher.channels.result import SendResult
    from dispatcher.db.pool import close_pool

    _town(db, 3)
    distribute(request_payload("record-1"))
    ids = ledger.claim_batch(db, "record-1", Channel.EMAIL, size=3, owner="me", lease_seconds=60)
    db.commit()
    name = db.execute("SELECT current_database()").fetchone()
    assert name is not None and len(ids) == 3
    db.execute(f'ALTER DATABASE "{name[0]}" SET lock_timeout = \'100ms\'')  # for the pool's new connections
    db.commit()
    close_pool()
    blocker = psycopg.connect(engine.database_url or "", autocommit=False)
    try:
        blocker.execute("SELECT 1 FROM deliveries WHERE request_id = 'record-1' FOR UPDATE")
        result = SendResult(outcomes=dict.fromkeys(ids, ledger.Outcome(ledger.Status.SENT)), accepted=3)
        recording = threading.Thread(target=fanout._record, args=(Channel.EMAIL, "record-1", result),
                                     kwargs={"patience_seconds": 30.0})
        recording.start()
        time.sleep(1.0)  # several attempts time out on the lock meanwhile
        assert _statuses(db, "record-1", "email") == Counter({"pending": 3})
        blocker.rollback()
        recording.join(30)
        assert not recording.is_alive()
    finally:
        blocker.close()
        db.execute(f'ALTER DATABASE "{name[0]}" RESET lock_timeout')
        db.commit()
        close_pool()
    assert _statuses(db, "record-1", "email") == Counter({"sent": 3})
    assert any("recording a sent batch failed" in r.message for r in caplog.records)
