"""The request lifecycle beyond the happy path: the reconciler, urgent queues, immutability end to end."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import psycopg
import pytest
import redis

from dispatcher import actors, ledger, lifecycle, reconciler
from dispatcher.broker import enqueueing_nudges
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.ledger import Channel
from dispatcher.pipeline import distribute
from tests.factories import add_resident, request_payload
from tests.test_end_to_end import wait_for_state

INSIDE = (40.015, -105.273)


class RecordedNudges:
    """Collects the reconciler's nudges instead of enqueueing them."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, bool]] = []
        self.drains: list[tuple[str, Channel, bool]] = []
        self.nudges = reconciler.Nudges(target=lambda r, u: self.targets.append((r, u)),
                                        drain=lambda r, c, u: self.drains.append((r, c, u)))


def _town(db: Conn, n: int) -> None:
    for i in range(1, n + 1):
        add_resident(db, i, INSIDE[0] + i * 1e-5, INSIDE[1], email=f"r{i}@example.test", tokens=[f"tok-{i}"])


def _age(db: Conn, request_id: str, seconds: int) -> None:
    db.execute("UPDATE community_requests SET updated_at = now() - make_interval(secs => %s),"
               " targeted_at = now() - make_interval(secs => %s) WHERE id = %s", (seconds, seconds, request_id))
    db.execute("UPDATE request_activity SET active_at = now() - make_interval(secs => %s) WHERE request_id = %s",
               (seconds, request_id))


def test_reconciler_retargets_a_request_a_crash_left_accepted(db: Conn, engine: Settings) -> None:
    lifecycle.accept(db, parse_request(request_payload("stuck-1", incident_type="missing_person")))
    recorded = RecordedNudges()
    assert reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges) is not None
    assert recorded.targets == []  # just accepted: its message is probably on its way
    _age(db, "stuck-1", 60)
    report = reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert report is not None and report.retargeted == ["stuck-1"]
    assert recorded.targets == [("stuck-1", True)]
    reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert len(recorded.targets) == 1  # nudged once per stale period, not on every sweep


def test_reconciler_skips_a_request_being_targeted_right_now(db: Conn, engine: Settings) -> None:
    lifecycle.accept(db, parse_request(request_payload("busy-1")))
    _age(db, "busy-1", 60)
    assert engine.database_url
    with psycopg.connect(engine.database_url) as targeting:
        lifecycle.transition(targeting, "busy-1", lifecycle.State.TARGETING, from_={lifecycle.State.ACCEPTED})
        recorded = RecordedNudges()
        reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
        assert recorded.targets == []
        targeting.rollback()  # the targeting worker dies: its transaction rolls back to 'accepted'
    reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert recorded.targets == [("busy-1", False)]


def test_reconciler_nudges_a_sending_request_whose_messages_were_lost(db: Conn, engine: Settings) -> None:
    _town(db, 3)
    distribute(request_payload("lost-1"))
    ledger.claim_batch(db, "lost-1", Channel.PUSH, size=3, owner="killed", lease_seconds=3600)
    _age(db, "lost-1", 60)
    recorded = RecordedNudges()
    report = reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    # Push rows are all held by a live lease: only email is stuck.
    assert report is not None and report.nudged == [("lost-1", "email")]
    db.execute("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE request_id = 'lost-1'")
    _age(db, "lost-1", 60)
    report = reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert report is not None and sorted(report.nudged) == [("lost-1", "email"), ("lost-1", "push")]


def test_reconciler_completes_and_expires(db: Conn, engine: Settings) -> None:
    _town(db, 2)
    distribute(request_payload("done-1"))
    db.execute("UPDATE deliveries SET status = 'sent' WHERE request_id = 'done-1'")
    distribute(request_payload("old-1"))
    db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second' WHERE id = 'old-1'")
    recorded = RecordedNudges()
    report = reconciler.sweep(db, stale_seconds=30, nudges=recorded.nudges)
    assert report is not None and report.completed == ["done-1"] and report.expired == ["old-1"]
    states = dict(db.execute("SELECT id, state FROM community_requests").fetchall())
    assert states == {"done-1": "completed", "old-1": "expired"}
    assert Counter(str(r[0]) for r in db.execute("SELECT status FROM deliveries WHERE request_id = 'old-1'")) == \
        Counter({"expired": 4})


def test_only_one_process_sweeps_at_a_time(db: Conn, engine: Settings) -> None:
    assert engine.database_url
    with psycopg.connect(engine.database_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (reconciler._LOCK_KEY,))
        assert reconciler.sweep(db, stale_seconds=30, nudges=RecordedNudges().nudges) is None


def test_a_request_whose_queue_messages_all_vanished_is_finished_by_the_reconciler(
    db: Conn, engine: Settings, sandbox: Any, worker: Any
) -> None:
    _town(db, 5)
    lifecycle.accept(db, parse_request(request_payload("vanished-1")))  # its message never arrives
    _age(db, "vanished-1", 120)
    with psycopg.connect(engine.database_url or "") as conn:
        reconciler.sweep(conn, stale_seconds=30, nudges=enqueueing_nudges())  # real nudges: a message
    assert wait_for_state(db, "vanished-1", {"completed"}, timeout=30) == "completed"
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({f"tok-{i}": 1 for i in range(1, 6)})
    assert len(sandbox.records("sendgrid")) == 5


def test_urgent_requests_travel_on_their_own_queues(engine: Settings, redis_client: redis.Redis) -> None:
    broker = dramatiq.get_broker()
    broker.flush_all()
    actors.enqueue_request(request_payload("urgent-1", incident_type="threat_to_safety"))
    actors.enqueue_request(request_payload("normal-1"))
    actors.start_fanout("urgent-1", parallelism=1, urgent=True)
    assert redis_client.llen("dispatcher:requests.urgent") == 1
    assert redis_client.llen("dispatcher:requests") == 1
    assert redis_client.llen("dispatcher:push.urgent") == 1 and redis_client.llen("dispatcher:email.urgent") == 1
    assert redis_client.llen("dispatcher:push") == 0
    assert actors.send_urgent_push.priority < actors.send_push.priority
    broker.flush_all()


def test_same_payload_again_is_a_noop_and_a_changed_one_is_rejected_for_ops(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, 2)
    payload = request_payload("immutable-1")
    first = distribute(payload)
    again = distribute(payload)
    changed = distribute({**payload, "details": "Something else entirely."})
    assert (first.state, again.state, changed.state) == ("sending", "sending", "conflict")
    assert db.execute("SELECT count(*) FROM deliveries WHERE request_id = 'immutable-1'").fetchone() == (4,)
    reasons = [str(r[0]) for r in db.execute("SELECT reason FROM request_rejections")]
    assert len(reasons) == 1 and "different payload" in reasons[0]


def test_reconciler_thread_runs_sweeps_until_stopped(db: Conn, engine: Settings) -> None:
    lifecycle.accept(db, parse_request(request_payload("thread-1")))
    db.execute("UPDATE community_requests SET respond_until = now() - interval '1 second'")
    running = reconciler.Reconciler(RecordedNudges().nudges, interval=0.1, stale_seconds=30)
    running.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = db.execute("SELECT state FROM community_requests WHERE id = 'thread-1'").fetchone()
            if row == ("expired",):
                break
            time.sleep(0.05)
    finally:
        running.stop()
    assert db.execute("SELECT state FROM community_requests WHERE id = 'thread-1'").fetchone() == ("expired",)


def _stream_ids(client: redis.Redis) -> list[str]:
    from dispatcher.lifecycle.events import STREAM

    return [fields[b"id"].decode() for _, fields in client.xrange(STREAM)]


def test_a_malformed_message_reusing_a_stored_id_neither_changes_nor_announces_that_request(
    db: Conn, engine: Settings, redis_client: redis.Redis
) -> None:
    _town(db, 2)
    payload = request_payload("live-1")
    assert distribute(payload).state == "sending"
    malformed = {**payload, "agency": None, "details": ""}
    outcome = distribute(malformed)
    assert outcome.state == "rejected"
    # The message was refused and recorded for ops; the request it pretended to be is untouched.
    assert db.execute("SELECT state, reason FROM community_requests WHERE id = 'live-1'").fetchone() == (
        "sending", None)
    assert db.execute("SELECT count(*) FROM deliveries WHERE request_id = 'live-1' AND status = 'pending'"
                      ).fetchone() == (4,)
    assert _stream_ids(redis_client) == []
    rejections = db.execute("SELECT request_id, reason FROM request_rejections").fetchall()
    assert len(rejections) == 1 and rejections[0][0] == "live-1" and "agency" in str(rejections[0][1])


def test_a_malformed_message_with_a_new_id_claims_the_id_as_rejected_once(
    db: Conn, engine: Settings, redis_client: redis.Redis
) -> None:
    payload = request_payload("claimed-1")
    assert distribute({**payload, "investigator": {}}).state == "rejected"
    assert _stream_ids(redis_client) == ["claimed-1"]
    # The valid message arriving later cannot turn a request the pipeline heard was rejected into a sent one.
    assert distribute(payload).state == "conflict"
    assert distribute({**payload, "investigator": {}}).state == "rejected"
    assert _stream_ids(redis_client) == ["claimed-1"]
    assert db.execute("SELECT state FROM community_requests WHERE id = 'claimed-1'").fetchone() == ("rejected",)
    assert db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


@pytest.mark.parametrize("bad_id", ["x" * 5_000_000, "x" * 129, "has space", "../../etc/passwd", "",
                                    "line\nbreak", "-starts-with-dash", 12345, None, ["list"]],
                         ids=["5 MB", "129 chars", "space", "path", "empty", "newline", "dash", "int", "null",
                              "list"])
def test_ids_of_malformed_messages_are_validated_before_anything_is_recorded_or_announced(
    db: Conn, engine: Settings, redis_client: redis.Redis, bad_id: Any
) -> None:
    payload = request_payload()
    payload["id"] = bad_id
    payload["details"] = ""  # malformed twice: the id and a field
    outcome = distribute(payload)
    assert outcome.state == "rejected" and outcome.request_id is None
    assert _stream_ids(redis_client) == []
    assert db.execute("SELECT count(*) FROM community_requests").fetchone() == (0,)
    row = db.execute("SELECT request_id, length(reason) FROM request_rejections").fetchone()
    assert row is not None and row[0] is None and int(str(row[1])) < 2_000


@pytest.mark.parametrize("published", [datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
                                       datetime(2099, 1, 1, tzinfo=UTC),
                                       datetime.now(UTC) + timedelta(minutes=30)],
                         ids=["9999", "2099", "30 minutes ahead"])
def test_the_worker_rejects_a_published_at_in_the_future_without_crashing(
    db: Conn, engine: Settings, redis_client: redis.Redis, published: datetime
) -> None:
    outcome = distribute(request_payload("future-1", published=published))
    assert outcome.state == "rejected"
    assert outcome.reason is not None and "published_at" in outcome.reason and "future" in outcome.reason
    assert db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    assert _stream_ids(redis_client) == ["future-1"]
    # A request published just now (within the allowed clock skew) still goes through.
    soon = distribute(request_payload("soon-1", published=datetime.now(UTC) + timedelta(seconds=60)))
    assert soon.state == "sending"


def test_a_far_future_request_sent_through_the_queue_is_rejected_not_dead_lettered(
    db: Conn, engine: Settings, redis_client: redis.Redis, worker: Any
) -> None:
    actors.distribute_request.send(request_payload("future-2", published=datetime(9999, 12, 31, tzinfo=UTC)))
    assert wait_for_state(db, "future-2", {"rejected"}, timeout=20) == "rejected"
    dramatiq.get_broker().join(actors.distribute_request.queue_name, timeout=10_000)
    assert redis_client.llen("dispatcher:requests.DQ") == 0
