"""What goes back to the publishing pipeline: a request's id, final state and time, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from pydantic import ValidationError

from dispatcher import lifecycle
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.fanout import drain
from dispatcher.ledger import Channel
from dispatcher.lifecycle import State
from dispatcher.lifecycle.events import STREAM, RequestEvent, publish_request_event, read_request_events
from dispatcher.pipeline import distribute
from tests.factories import add_resident, request_payload


@pytest.mark.parametrize("leak", ["count", "recipients", "residents", "cameras", "resident_ids", "emails"])
def test_the_event_refuses_any_other_field(leak: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RequestEvent.model_validate({"id": "r", "state": "completed", "at": datetime.now(UTC), leak: 12})


def test_only_final_states_with_a_zoned_time_are_events(redis_client: redis.Redis) -> None:
    with pytest.raises(ValidationError):
        publish_request_event("r", "sending", client=redis_client)
    with pytest.raises(ValidationError):
        RequestEvent.model_validate({"id": "r", "state": "completed", "at": datetime(2026, 1, 1)})
    assert redis_client.exists(STREAM) == 0


def test_distributed_requests_send_back_only_id_state_and_time(db: Conn, redis_client: redis.Redis) -> None:
    # Residents inside the factory's square, some with cameras: none of it may travel back.
    for rid in range(1, 8):
        add_resident(db, rid, 40.012 + rid * 0.001, -105.275, has_camera=rid % 2 == 0)
    started = datetime.now(UTC)
    sent = distribute(request_payload("req-done"))
    assert sent.state == "sending" and sent.recipients_written == 14  # 7 residents × 2 channels, all skipped
    for channel in Channel:
        drain("req-done", channel, budget_seconds=5)
    bad_area = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    assert distribute(request_payload("req-bad", area=bad_area)).state == "rejected"
    lifecycle.accept(db, parse_request(request_payload("req-late")))
    lifecycle.transition(db, "req-late", State.EXPIRED, from_={State.ACCEPTED}, reason="window ended")

    raw = redis_client.xrange(STREAM)
    events = {fields[b"id"].decode(): fields for _, fields in raw}
    assert set(events) == {"req-done", "req-bad", "req-late"}
    for request_id, fields in events.items():
        assert set(fields) == {b"id", b"state", b"at"}, f"{request_id} carries {sorted(fields)}"
        assert started - timedelta(seconds=1) <= datetime.fromisoformat(fields[b"at"].decode()) <= datetime.now(UTC)
    assert {k: v[b"state"] for k, v in events.items()} == {
        "req-done": b"completed", "req-bad": b"rejected", "req-late": b"expired"}
    # Nothing else was written where the pipeline could read it.
    assert [k.decode() for k in redis_client.scan_iter()] == [STREAM]
    assert [e.state for _, e in read_request_events(client=redis_client)] == ["completed", "rejected", "expired"]


def test_intermediate_states_send_nothing_back(db: Conn, redis_client: redis.Redis) -> None:
    lifecycle.accept(db, parse_request(request_payload("req-mid")))
    assert lifecycle.transition(db, "req-mid", State.TARGETING, from_={State.ACCEPTED})
    assert lifecycle.transition(db, "req-mid", State.SENDING, from_={State.TARGETING})
    assert not lifecycle.transition(db, "req-mid", State.COMPLETED, from_={State.ACCEPTED})

    assert redis_client.exists(STREAM) == 0


def test_requests_refused_on_arrival_are_reported_as_rejected_or_expired(
    db: Conn, redis_client: redis.Redis
) -> None:
    malformed = request_payload("req-malformed")
    del malformed["agency"]
    assert distribute(malformed).state == "rejected"
    too_late = request_payload("req-too-late", published=datetime.now(UTC) - timedelta(days=61))
    assert distribute(too_late).state == "expired"
    assert distribute({"details": "no id at all"}).state == "rejected"

    events = {fields[b"id"].decode(): fields for _, fields in redis_client.xrange(STREAM)}
    assert {k: v[b"state"] for k, v in events.items()} == {
        "req-malformed": b"rejected", "req-too-late": b"expired"}
    assert all(set(fields) == {b"id", b"state", b"at"} for fields in events.values())
