"""SendGrid's signed event webhook: verification, storage without addresses in the queue, suppression."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import dramatiq
import httpx
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives import serialization

from dispatcher.broker import RESIDENTS_QUEUE
from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.preferences import eligibility, feedback, updates
from dispatcher.preferences.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, load_public_key
from dispatcher.preferences.webhook import EventWebhookApp, create_app
from tests.webhook_posts import OTHER_KEY, PRIVATE_KEY, event, post, public_key_text, signed

Conn = psycopg.Connection[Any]

@pytest.fixture
def app(settings: Settings) -> EventWebhookApp:
    return create_app(settings.with_(sendgrid_webhook_public_key=public_key_text(PRIVATE_KEY),
                                     sendgrid_unsubscribe_group=7))


def _queued_messages(client: redis.Redis) -> list[bytes]:
    return [v for key in client.keys("*.msgs") for v in client.hvals(key)]


# --- verification -------------------------------------------------------------------------------

def test_signed_post_is_stored_and_only_a_batch_id_is_queued(
    app: EventWebhookApp, index_db: Conn, redis_client: redis.Redis
) -> None:
    events = [
        event("bounce", "Gone@Example.org", "ev-1", type="bounce"),
        event("delivered", "fine@example.org", "ev-2"),
        event("bounce", "busy@example.org", "ev-3", type="blocked"),
        event("spamreport", "angry@example.org", "ev-4"),
    ]
    body, headers = signed(events)
    response = post(app, body, headers)
    assert response.status_code == 200
    assert response.json() == {"received": 4, "kept": 2}
    stored = index_db.execute("SELECT sg_event_id, event FROM webhook_events ORDER BY 1").fetchall()
    assert stored == [("ev-1", "bounce"), ("ev-4", "spamreport")]
    queued = _queued_messages(redis_client)
    assert len(queued) == 1
    message = json.loads(queued[0])
    assert message["actor_name"] == "sendgrid_events" and len(message["args"]) == 1
    assert b"@" not in queued[0]


@pytest.mark.parametrize("case", ["tampered", "wrong_key", "no_signature", "no_timestamp", "stale", "future",
                                  "garbage_signature"])
def test_unsigned_tampered_or_stale_posts_are_refused(app: EventWebhookApp, index_db: Conn, case: str) -> None:
    events = [event("bounce", "victim@example.org", "ev-x")]
    now = int(time.time())
    key = OTHER_KEY if case == "wrong_key" else PRIVATE_KEY
    stamp = now - 3600 if case == "stale" else now + 3600 if case == "future" else now
    body, headers = signed(events, key=key, timestamp=stamp)
    if case == "tampered":
        body = body.replace(b"victim", b"target")
    elif case == "no_signature":
        del headers[SIGNATURE_HEADER]
    elif case == "no_timestamp":
        del headers[TIMESTAMP_HEADER]
    elif case == "garbage_signature":
        headers[SIGNATURE_HEADER] = "not base64!"

    response = post(app, body, headers)

    assert response.status_code == 403
    assert index_db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)


def test_signed_but_malformed_body_is_a_bad_request(app: EventWebhookApp, index_db: Conn) -> None:
    for body in (b"{not json", b'{"event": "bounce"}', b"[1, 2]"):
        payload, headers = signed(None, body=body)
        assert post(app, payload, headers).status_code == 400


def test_other_methods_and_health(app: EventWebhookApp) -> None:
    async def go() -> tuple[int, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
            return (await client.get("/healthz")).status_code, (await client.get("/")).status_code

    assert asyncio.run(go()) == (200, 405)


def test_a_failing_store_answers_500_so_sendgrid_retries(settings: Settings) -> None:
    def broken(events: list[dict[str, Any]]) -> int:
        raise RuntimeError("database is down")

    app = EventWebhookApp(load_public_key(public_key_text(PRIVATE_KEY)), broken)
    body, headers = signed([event("bounce", "a@example.org", "ev-1")])
    assert post(app, body, headers).status_code == 500


def test_public_key_formats_and_missing_configuration(settings: Settings) -> None:
    pem = PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert load_public_key(pem).public_numbers() == PRIVATE_KEY.public_key().public_numbers()
    with pytest.raises(ConfigurationError, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        create_app(settings.with_(sendgrid_webhook_public_key=None))
    with pytest.raises(ConfigurationError, match="not a public key"):
        load_public_key("bm90IGEga2V5")


# --- the worker side ----------------------------------------------------------------------------

def test_duplicates_and_replays_are_harmless(index_db: Conn) -> None:
    events = [event("unsubscribe", "Leave@Example.org", "ev-1"), event("dropped", "leave@example.org", "ev-2",
                                                                        reason="Unsubscribed Address")]
    first, kept = feedback.record_webhook_events(index_db, events)
    assert kept == 2
    second, kept_again = feedback.record_webhook_events(index_db, events)  # SendGrid retried the post
    assert kept_again == 2
    assert index_db.execute("SELECT count(*) FROM webhook_events").fetchone() == (2,)
    # The events moved to the newer batch: the older message finds nothing, the newer one applies them.
    assert feedback.apply_webhook_events(index_db, first) == 0
    assert feedback.apply_webhook_events(index_db, second) == 1
    assert feedback.apply_webhook_events(index_db, second) == 0
    assert index_db.execute("SELECT email, reason FROM email_suppressions").fetchall() == [
        ("leave@example.org", "unsubscribe")
    ]
    assert index_db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
    # A replay after processing suppresses nothing new.
    replay, _ = feedback.record_webhook_events(index_db, events)
    assert feedback.apply_webhook_events(index_db, replay) == 0


def test_bounce_through_the_worker_suppresses_the_resident(
    app: EventWebhookApp, index_db: Conn, residents_worker: dramatiq.Worker
) -> None:
    index_db.execute(
        "INSERT INTO community_requests (id, payload, payload_sha256, state, published_at, respond_until)"
        " VALUES ('req-1', '{}', 'x', 'sending', now(), now() + interval '60 days')"
    )
    updates.upsert_resident(index_db, 1, version=1, lat=1.0, lng=1.0, email="Bouncy@Example.org")
    updates.upsert_resident(index_db, 2, version=1, lat=1.0, lng=1.0, email="ok@example.org")
    events = [event("bounce", "bouncy@example.org", "ev-1", type="bounce"),
              event("group_unsubscribe", "other@example.org", "ev-2", asm_group_id=7)]
    for _ in range(2):  # the second post is a duplicate
        body, headers = signed(events)
        assert post(app, body, headers).status_code == 200

    dramatiq.get_broker().join(RESIDENTS_QUEUE, timeout=10_000)

    assert index_db.execute("SELECT email, reason FROM email_suppressions ORDER BY email").fetchall() == [
        ("bouncy@example.org", "bounce"), ("other@example.org", "group_unsubscribe")
    ]
    assert index_db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
    targets, skipped = eligibility.eligible_email_targets(index_db, "req-1", [1, 2])
    assert set(targets) == {2} and skipped == {1: "email_suppressed"}


def test_sandbox_signed_posts_are_accepted(app: EventWebhookApp, index_db: Conn) -> None:
    """The sandbox signs exactly like SendGrid; its posts must pass our verification unchanged."""
    from dispatcher.sandbox.webhook import post_events

    events = [event("bounce", "sandbox@example.org", "ev-s1", type="bounce")]

    async def go() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
            return await post_events("http://w/events", PRIVATE_KEY, events, client=client)

    assert asyncio.run(go()) == 1
    assert index_db.execute("SELECT sg_event_id FROM webhook_events").fetchall() == [("ev-s1",)]


def test_events_whose_queue_message_was_lost_are_applied_by_the_next_batch(index_db: Conn) -> None:
    lost, _ = feedback.record_webhook_events(index_db, [event("bounce", "lost@example.org", "ev-lost")])
    index_db.execute("UPDATE webhook_events SET received_at = now() - interval '1 hour'")
    fresh, _ = feedback.record_webhook_events(index_db, [event("spamreport", "new@example.org", "ev-new")])
    assert lost != fresh
    assert feedback.apply_webhook_events(index_db, fresh) == 2
    assert index_db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
