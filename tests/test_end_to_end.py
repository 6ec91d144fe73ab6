"""From enqueue to recorded outcomes: a real worker, real PostgreSQL and Redis, the sandbox providers."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import dramatiq

from dispatcher.config import Settings
from dispatcher.db.types import Conn
from dispatcher.publishing import publish
from tests.factories import add_resident, request_payload

INSIDE = (40.015, -105.273)
OUTSIDE = (40.05, -105.273)


def wait_for_state(db: Conn, request_id: str, states: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    state = "missing"
    while time.monotonic() < deadline:
        row = db.execute("SELECT state FROM community_requests WHERE id = %s", (request_id,)).fetchone()
        state = str(row[0]) if row else "missing"
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"request {request_id} stuck in state {state}")


def test_request_reaches_exactly_the_residents_inside_with_settings_on(
    db: Conn, engine: Settings, sandbox: Any, worker: Any
) -> None:
    add_resident(db, 1, *INSIDE, email="one@example.test", tokens=["tok-1a", "tok-1b"], has_camera=True)
    add_resident(db, 2, *INSIDE, email="two@example.test", tokens=["tok-2"])
    add_resident(db, 3, *INSIDE, email="three@example.test", tokens=["tok-3"], community_requests=False)
    add_resident(db, 4, *INSIDE, email="four@example.test", tokens=["tok-4"], push=False)
    add_resident(db, 5, *INSIDE, email="five@example.test", tokens=["tok-5"], email_enabled=False)
    add_resident(db, 6, *OUTSIDE, email="six@example.test", tokens=["tok-6"])

    request_id = publish(request_payload("e2e-1"))
    assert wait_for_state(db, request_id, {"completed", "rejected", "expired"}) == "completed"
    sandbox.flush()

    pushes = Counter(r["token"] for r in sandbox.records("fcm"))
    emails = Counter(r["email"] for r in sandbox.records("sendgrid"))
    assert pushes == Counter({"tok-1a": 1, "tok-1b": 1, "tok-2": 1, "tok-5": 1})
    assert emails == Counter({"one@example.test": 1, "two@example.test": 1, "four@example.test": 1})

    by_token = {r["token"]: r["message"] for r in sandbox.records("fcm")}
    assert by_token["tok-1a"]["data"]["action"] == "choose_videos"
    assert by_token["tok-2"]["data"]["action"] == "view_request"
    assert by_token["tok-2"]["data"]["request_id"] == request_id
    assert by_token["tok-2"]["android"]["notification"]["tag"] == f"cr-{request_id}"
    assert by_token["tok-2"]["apns"]["headers"]["apns-collapse-id"] == f"cr-{request_id}"

    ledger = {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "SELECT resident_id, channel, status, reason FROM deliveries WHERE request_id = %s", (request_id,))}
    assert ledger[(1, "push")][0] == "sent" and ledger[(1, "email")][0] == "sent"
    assert (3, "push") not in ledger and (6, "push") not in ledger
    assert ledger[(4, "push")] == ("skipped", "push_off")
    assert ledger[(5, "email")] == ("skipped", "email_off")


def test_invalid_request_in_the_queue_is_rejected_and_the_worker_carries_on(
    db: Conn, engine: Settings, sandbox: Any, worker: Any
) -> None:
    from dispatcher.actors import distribute_request

    add_resident(db, 1, *INSIDE, email="one@example.test", tokens=["tok-1"])
    bad = request_payload("bad-1")
    del bad["agency"]
    distribute_request.send(bad)
    swapped = request_payload("bad-2", area={"type": "Polygon", "coordinates": [
        [[40.01, -105.28], [40.01, -105.267], [40.02, -105.267], [40.01, -105.28]]]})
    distribute_request.send(swapped)
    good = publish(request_payload("good-1"))
    assert wait_for_state(db, good, {"completed"}) == "completed"
    assert wait_for_state(db, "bad-2", {"rejected"}) == "rejected"
    reason = db.execute("SELECT reason FROM community_requests WHERE id = 'bad-2'").fetchone()
    assert reason is not None and "area" in str(reason[0])
    rejected = [r[0] for r in db.execute("SELECT reason FROM request_rejections WHERE request_id = 'bad-1'")]
    assert rejected and "agency" in rejected[0]
    sandbox.flush()
    assert [r["token"] for r in sandbox.records("fcm")] == ["tok-1"]


def test_redelivered_request_message_sends_nothing_twice(
    db: Conn, engine: Settings, sandbox: Any, worker: Any
) -> None:
    from dispatcher.actors import distribute_request

    add_resident(db, 1, *INSIDE, email="one@example.test", tokens=["tok-1"])
    payload = request_payload("dup-1")
    request_id = publish(payload)
    assert wait_for_state(db, request_id, {"completed"}) == "completed"
    distribute_request.send(payload)
    broker = dramatiq.get_broker()
    for queue in ("requests", "push", "email"):
        broker.join(queue, timeout=30_000)
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({"tok-1": 1})
    assert Counter(r["email"] for r in sandbox.records("sendgrid")) == Counter({"one@example.test": 1})
