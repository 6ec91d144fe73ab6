"""The request lifecycle and the delivery ledger: immutability, leases, outcomes, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql

from dispatcher import ledger, lifecycle
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.errors import RequestConflict
from dispatcher.ledger import Channel, Outcome, Status
from dispatcher.lifecycle import State
from tests.factories import add_resident, request_payload

PUBLISHED = datetime.now(UTC) - timedelta(minutes=5)


def _accept(db: Conn, request_id: str = "req-1", **kw: Any) -> lifecycle.StoredRequest:
    kw.setdefault("published", PUBLISHED)
    return lifecycle.accept(db, parse_request(request_payload(request_id, **kw)))


def test_same_payload_twice_is_a_noop(db: Conn) -> None:
    first = _accept(db)
    again = _accept(db)
    assert first.state is State.ACCEPTED and again.state is State.ACCEPTED
    assert db.execute("SELECT count(*) FROM community_requests").fetchone() == (1,)


def test_changed_payload_is_a_conflict_recorded_for_ops(db: Conn) -> None:
    _accept(db)
    with pytest.raises(RequestConflict):
        _accept(db, details="Edited details")
    reasons = [r[0] for r in db.execute("SELECT reason FROM request_rejections WHERE request_id = 'req-1'")]
    assert len(reasons) == 1 and "cannot be changed" in reasons[0]
    stored = db.execute("SELECT payload->>'details' FROM community_requests").fetchone()
    assert stored is not None and "Edited" not in str(stored[0])


def test_request_past_the_window_is_stored_expired(db: Conn) -> None:
    stored = _accept(db, published=datetime.now(UTC) - timedelta(days=61))
    assert stored.state is State.EXPIRED
    assert not lifecycle.window_open(db, "req-1")


def _ids_sql(ids: list[int]) -> tuple[sql.Composable, list[object]]:
    return sql.SQL("SELECT unnest(%s::bigint[])"), [ids]


def test_deliveries_follow_settings_and_destinations(db: Conn) -> None:
    _accept(db)
    add_resident(db, 1, 40.0, -105.0, email="a@x.test", tokens=["t1"])
    add_resident(db, 2, 40.0, -105.0, email="b@x.test", tokens=["t2"], community_requests=False)
    add_resident(db, 3, 40.0, -105.0, email="c@x.test", tokens=["t3"], push=False)
    add_resident(db, 4, 40.0, -105.0, email=None, tokens=[])
    add_resident(db, 5, 40.0, -105.0, email="Bounced@X.test", tokens=["t5"], email_enabled=True)
    db.execute("INSERT INTO email_suppressions (email, reason) VALUES ('bounced@x.test', 'bounce')")
    query, params = _ids_sql([1, 2, 3, 4, 5, 99])
    written = ledger.insert_deliveries(db, "req-1", query, params)
    rows = {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "SELECT resident_id, channel, status, reason FROM deliveries")}
    assert written == 8  # residents 1, 3, 4, 5 on both channels; 2 opted out; 99 does not exist
    assert rows[(1, "push")] == ("pending", None) and rows[(1, "email")] == ("pending", None)
    assert (2, "push") not in rows and (2, "email") not in rows
    assert rows[(3, "push")] == ("skipped", "push_off")
    assert rows[(4, "push")] == ("skipped", "no_active_token") and rows[(4, "email")] == ("skipped", "no_email")
    assert rows[(5, "email")] == ("skipped", "email_suppressed")
    assert ledger.insert_deliveries(db, "req-1", query, params) == 0  # re-running writes nothing


def test_claims_do_not_overlap_and_expired_leases_are_reclaimed(db: Conn) -> None:
    _accept(db)
    for rid in range(1, 11):
        add_resident(db, rid, 40.0, -105.0, email=f"r{rid}@x.test", tokens=[f"t{rid}"])
    query, params = _ids_sql(list(range(1, 11)))
    ledger.insert_deliveries(db, "req-1", query, params)
    first = ledger.claim_batch(db, "req-1", Channel.PUSH, size=4, owner="w1", lease_seconds=60)
    second = ledger.claim_batch(db, "req-1", Channel.PUSH, size=4, owner="w2", lease_seconds=60)
    assert len(first) == 4 and len(second) == 4 and not set(first) & set(second)
    # w1 dies: its lease runs out and the rows go to the next claimant.
    db.execute("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE lease_owner = 'w1'")
    third = ledger.claim_batch(db, "req-1", Channel.PUSH, size=10, owner="w3", lease_seconds=60)
    assert set(first) <= set(third) and not set(second) & set(third)


def test_first_outcome_wins_and_sent_rows_are_never_claimed_again(db: Conn) -> None:
    _accept(db)
    add_resident(db, 1, 40.0, -105.0, email="a@x.test", tokens=["t1"])
    query, params = _ids_sql([1])
    ledger.insert_deliveries(db, "req-1", query, params)
    assert ledger.claim_batch(db, "req-1", Channel.EMAIL, size=10, owner="w1", lease_seconds=60) == [1]
    assert ledger.record_outcomes(db, "req-1", Channel.EMAIL, {1: Outcome(Status.SENT)}) == 1
    assert ledger.record_outcomes(db, "req-1", Channel.EMAIL, {1: Outcome(Status.FAILED, "late")}) == 0
    db.execute("UPDATE deliveries SET lease_until = NULL")
    assert ledger.claim_batch(db, "req-1", Channel.EMAIL, size=10, owner="w2", lease_seconds=60) == []
    assert ledger.progress(db, "req-1")["email"] == {"sent": 1}


def test_released_rows_wait_before_the_next_attempt(db: Conn) -> None:
    _accept(db)
    add_resident(db, 1, 40.0, -105.0, email="a@x.test", tokens=["t1"])
    query, params = _ids_sql([1])
    ledger.insert_deliveries(db, "req-1", query, params)
    ledger.claim_batch(db, "req-1", Channel.PUSH, size=10, owner="w1", lease_seconds=60)
    ledger.release(db, "req-1", Channel.PUSH, [1], retry_in_seconds=30, reason="provider_retry")
    assert ledger.claim_batch(db, "req-1", Channel.PUSH, size=10, owner="w2", lease_seconds=60) == []
    work = ledger.pending_work(db, "req-1", Channel.PUSH)
    assert work.claimable == 0 and work.leased == 1
    assert work.next_lease_expiry_seconds is not None and 20 < work.next_lease_expiry_seconds <= 30
