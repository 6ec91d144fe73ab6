"""Hostile bodies for SendGrid's event webhook: each is signed (only SendGrid could send it), so each must
end in a clean answer, and every good event posted beside it must still suppress its address."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
import redis

from dispatcher.config import Settings
from dispatcher.preferences import feedback
from dispatcher.preferences.webhook import MAX_BODY_BYTES, EventWebhookApp, create_app
from tests.webhook_posts import PRIVATE_KEY, event, post, public_key_text, signed

Conn = psycopg.Connection[Any]

#: The unrelated unsubscribe every hostile post carries: it must never be lost.
GOOD = event("unsubscribe", "keep@example.org", "ev-good")
HUGE = "x" * (1 << 20)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


#: (name, body of the post, HTTP status, whether GOOD must end up suppressed)
CASES: list[tuple[str, Callable[[], bytes], int, bool]] = [
    ("same sg_event_id twice", lambda: json.dumps(
        [event("bounce", "a@example.org", "ev-1"), event("bounce", "a@example.org", "ev-1"), GOOD]).encode(),
     200, True),
    ("identical events without sg_event_id", lambda: json.dumps(
        [event("spamreport", "b@example.org", None, timestamp=1)] * 2 + [GOOD]).encode(), 200, True),
    ("megabyte email", lambda: json.dumps([event("bounce", HUGE + "@example.org", "ev-2"), GOOD]).encode(),
     200, True),
    ("NUL in email", lambda: json.dumps([event("bounce", "c\u0000@example.org", "ev-3"), GOOD]).encode(),
     200, True),
    ("megabyte sg_event_id", lambda: json.dumps([event("bounce", "d@example.org", HUGE), GOOD]).encode(),
     200, True),
    ("NUL in sg_event_id", lambda: json.dumps([event("bounce", "e@example.org", "ev\u0000"), GOOD]).encode(),
     200, True),
    ("event kind not a string", lambda: json.dumps([{"event": ["bounce"], "email": "f@example.org"}, GOOD]).encode(),
     200, True),
    ("email not a string", lambda: json.dumps([{"event": "bounce", "email": {"a": 1}}, GOOD]).encode(), 200, True),
    ("timestamp absurd", lambda: json.dumps([event("bounce", "g@example.org", "ev-4", timestamp=10**30),
                                             event("bounce", "h@example.org", "ev-5", timestamp="soon"),
                                             GOOD]).encode(), 200, True),
    ("deeply nested body", lambda: _deep(200_000).encode(), 400, False),
    ("deeply nested field", lambda: ('[{"event":"bounce","email":"i@example.org","category":'
                                     + _deep(100) + "}]").encode(), 400, False),
    ("not JSON", lambda: b"\xff\xfe[not json", 400, False),
    ("not an array of objects", lambda: b'[1, "two", null]', 400, False),
    ("too large", lambda: b"[" + b" " * MAX_BODY_BYTES + b"]", 413, False),
    ("empty array", lambda: b"[]", 200, False),
]


@pytest.fixture
def webhook(settings: Settings, db: Conn, redis_client: redis.Redis) -> Iterator[EventWebhookApp]:
    dramatiq.get_broker().flush_all()
    yield create_app(settings.with_(sendgrid_webhook_public_key=public_key_text(PRIVATE_KEY)))


def _apply_everything_stored(db: Conn) -> None:
    """What the worker does, for every batch stored (each batch id is on the queue)."""
    for (batch_id,) in db.execute("SELECT DISTINCT batch_id FROM webhook_events").fetchall():
        feedback.apply_webhook_events(db, str(batch_id))


@pytest.mark.parametrize(("name", "body", "status", "good_kept"), CASES, ids=[c[0] for c in CASES])
def test_hostile_body_gets_a_clean_answer_and_loses_nothing(
    webhook: EventWebhookApp, db: Conn, name: str, body: Callable[[], bytes], status: int, good_kept: bool
) -> None:
    payload, headers = signed(None, body=body())

    response = post(webhook, payload, headers)

    assert response.status_code == status, response.text
    if status != 200:
        assert db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
        return
    _apply_everything_stored(db)
    suppressed = {str(e) for (e,) in db.execute("SELECT email FROM email_suppressions")}
    assert ("keep@example.org" in suppressed) is good_kept
    assert all(len(e) <= 254 and "\x00" not in e for e in suppressed)
    assert db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)


def test_the_same_events_posted_twice_are_applied_once(webhook: EventWebhookApp, db: Conn) -> None:
    events = [event("bounce", "twice@example.org", "ev-t", type="bounce"), GOOD, GOOD]
    for _ in range(2):
        payload, headers = signed(events)
        assert post(webhook, payload, headers).status_code == 200
    _apply_everything_stored(db)
    assert db.execute("SELECT email, reason FROM email_suppressions ORDER BY 1").fetchall() == [
        ("keep@example.org", "unsubscribe"), ("twice@example.org", "bounce")]
