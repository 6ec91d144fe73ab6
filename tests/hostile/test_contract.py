"""Hostile requests: each row is refused by ``publish()`` with an :class:`InvalidRequest` naming the problem,
nothing reaches the queue, and the worker, given the same message, records a rejection without touching the
request whose id it reuses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

import dispatcher
from dispatcher.config import Settings
from dispatcher.errors import InvalidRequest
from dispatcher.lifecycle.events import STREAM
from dispatcher.pipeline import distribute
from tests.factories import SQUARE, add_resident, request_payload

Conn = psycopg.Connection[Any]
Edit = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Edit:
    def edit(payload: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        target = payload
        for part in parents:
            target = target[part]
        target[last] = value
        return payload

    return edit


def _drop(name: str) -> Edit:
    def edit(payload: dict[str, Any]) -> dict[str, Any]:
        del payload[name]
        return payload

    return edit


_BOWTIE = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
_FAR_FUTURE = "9999-12-31T23:59:00+00:00"

#: (name, how the valid request is made hostile, what the error must name)
HOSTILE_REQUESTS: list[tuple[str, Edit, str]] = [
    ("a 5 MB id", _set("id", "x" * 5_000_000), "id"),
    ("an id with a space", _set("id", "req 1"), "id"),
    ("an id with a line break", _set("id", "req\n1"), "id"),
    ("an id of 129 characters", _set("id", "r" * 129), "id"),
    ("a number as id", _set("id", 42), "id"),
    ("a missing field", _drop("investigation_code"), "investigation_code"),
    ("an unexpected field", _set("resident_count", 12), "resident_count"),
    ("an unexpected field with a 1 MB name", _set("k" * 1_000_000, 1), "Extra inputs"),
    ("agency as a string", _set("agency", "Springfield Police"), "agency"),
    ("published in 9999", _set("published_at", _FAR_FUTURE), "published_at"),
    ("published in 2099", _set("published_at", "2099-01-01T00:00:00+00:00"), "published_at"),
    ("published 61 days ago", lambda p: request_payload(published=datetime.now(UTC) - timedelta(days=61)),
     "published_at"),
    ("published_at without an offset", _set("published_at", "2026-01-01T10:00:00"), "published_at"),
    ("published_at not a date", _set("published_at", "yesterday"), "published_at"),
    ("approved after publication", _set("approved_at", datetime.now(UTC).isoformat()), "approved_at"),
    ("footage window reversed", _set("footage_window", {"start": "2026-01-02T00:00:00+00:00",
                                                        "end": "2026-01-01T00:00:00+00:00"}), "footage_window"),
    ("details of 6,000 characters", _set("details", "d" * 6000), "details"),
    ("empty details", _set("details", "   "), "details"),
    ("a header injected in the email", _set("investigator.email", "a@b.org\r\nBcc: x@y.org"), "investigator.email"),
    ("an incident type with markup", _set("incident_type", "<b>bold</b>"), "incident_type"),
    ("an area with crs", _set("area", {"type": "Polygon", "coordinates": [SQUARE], "crs": {"type": "name"}}),
     "crs"),
    ("an area of strings", _set("area", {"type": "Polygon", "coordinates": [[[str(x), str(y)] for x, y in SQUARE]]}),
     "number"),
    ("an area with 20 MB of properties", _set("area", {"type": "Feature", "properties": {"p": "x" * 20_000_000},
                                                        "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}),
     "bytes"),
    ("a Point as area", _set("area", {"type": "Point", "coordinates": [-105.27, 40.01]}), "area"),
    ("a self-intersecting area", _set("area", {"type": "Polygon", "coordinates": [_BOWTIE]}), "self-intersection"),
    ("a list instead of an object", lambda p: [p], "expected a JSON object"),
    ("deeply nested JSON text", lambda p: "[" * 100_000 + "]" * 100_000, "request"),
    ("JSON text that is not UTF-8", lambda p: b'{"id": "caf\xe9"}', "request"),
]


def _hostile(edit: Edit) -> Any:
    return edit(request_payload("hostile-1"))


@pytest.mark.parametrize(("name", "edit", "named"), HOSTILE_REQUESTS, ids=[row[0] for row in HOSTILE_REQUESTS])
def test_publish_refuses_it_naming_the_problem_and_enqueues_nothing(
    name: str, edit: Edit, named: str, settings: Settings, redis_client: redis.Redis
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        dispatcher.publish(_hostile(edit))
    assert any(named in problem for problem in caught.value.problems), caught.value.problems
    assert len(str(caught.value)) < 2_000  # it names the problem, it does not echo the input
    assert redis_client.llen("dispatcher:requests") == 0


def test_a_valid_request_published_after_every_hostile_one_still_goes_through(
    settings: Settings, redis_client: redis.Redis
) -> None:
    for _, edit, _ in HOSTILE_REQUESTS:
        with pytest.raises(InvalidRequest):
            dispatcher.publish(_hostile(edit))
    assert dispatcher.publish(request_payload("good-1")) == "good-1"
    assert redis_client.llen("dispatcher:requests") == 1


_REUSABLE = [row for row in HOSTILE_REQUESTS if isinstance(_hostile(row[1]), dict)
             and _hostile(row[1]).get("id") == "hostile-1"]


@pytest.mark.parametrize(("name", "edit", "named"), _REUSABLE, ids=[row[0] for row in _REUSABLE])
def test_the_worker_rejects_it_without_touching_the_request_whose_id_it_reuses(
    name: str, edit: Edit, named: str, db: Conn, engine: Settings, redis_client: redis.Redis
) -> None:
    add_resident(db, 1, 40.015, -105.273, email="one@example.test", tokens=["tok-1"])
    assert distribute(request_payload("hostile-1")).state == "sending"
    before = db.execute("SELECT state, reason, payload_sha256, updated_at FROM community_requests").fetchall()
    deliveries = db.execute("SELECT channel, status FROM deliveries ORDER BY channel").fetchall()

    outcome = distribute(_hostile(edit))  # never raises: a bad message is recorded, not retried

    assert outcome.state in {"rejected", "conflict"}
    assert db.execute("SELECT state, reason, payload_sha256, updated_at FROM community_requests").fetchall() == before
    assert db.execute("SELECT channel, status FROM deliveries ORDER BY channel").fetchall() == deliveries
    assert redis_client.xlen(STREAM) == 0  # nothing announced about hostile-1
    reasons = [str(row[0]) for row in db.execute("SELECT reason FROM request_rejections")]
    assert len(reasons) == 1 and len(reasons[0]) <= 2_000
