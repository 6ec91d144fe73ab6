"""The whole feedback loop: mail accepted by the SendGrid sandbox, its signed events posted to our
webhook over HTTP, a real worker applying them, and the bounced resident no longer eligible."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import psycopg
import pytest

import dispatcher.preferences.actors  # noqa: F401  (declares the residents actors on the broker)
from dispatcher.asgi import served_in_thread
from dispatcher.broker import RESIDENTS_QUEUE
from dispatcher.config import Settings
from dispatcher.preferences import eligibility, updates
from dispatcher.preferences.webhook import create_app

Conn = psycopg.Connection[Any]


@pytest.fixture
def webhook_url(engine: Settings, sandbox: Any) -> Iterator[str]:
    """Our webhook app served over HTTP, trusting the sandbox's signing key."""
    app = create_app(engine.with_(sendgrid_webhook_public_key=sandbox.webhook_public_key))
    with served_in_thread(app, name="webhooks", lifespan="on") as url:
        yield f"{url}/sendgrid/events"


def _send_mail(engine: Settings, addresses: list[str]) -> None:
    mail = {
        "personalizations": [{"to": [{"email": a}]} for a in addresses],
        "from": {"email": engine.email_from},
        "subject": "A Community Request near you",
        "content": [{"type": "text/plain", "value": "Can you help?"}],
    }
    response = httpx.post(f"{engine.sendgrid_endpoint}/v3/mail/send", json=mail,
                          headers={"Authorization": f"Bearer {engine.sendgrid_api_key}"})
    assert response.status_code == 202, response.text


def test_sandbox_bounces_reach_suppression_through_the_webhook_and_a_worker(
    engine: Settings, sandbox: Any, db: Conn, worker: dramatiq.Worker, webhook_url: str
) -> None:
    addresses = {1: "bounces@example.org", 2: "complains@example.org", 3: "fine@example.org"}
    for resident_id, address in addresses.items():
        updates.upsert_resident(db, resident_id, version=1, lat=1.0, lng=1.0, email=address)
    db.execute(
        "INSERT INTO community_requests (id, payload, payload_sha256, state, published_at, respond_until)"
        " VALUES ('req-loop', '{}', 'x', 'sending', now(), now() + interval '60 days')"
    )
    sandbox.faults.update("sendgrid", unregistered={addresses[1]}, events={addresses[2]: "spamreport"})
    _send_mail(engine, list(addresses.values()))

    assert sandbox.deliver_events(webhook_url) == 3
    dramatiq.get_broker().join(RESIDENTS_QUEUE, timeout=15_000)

    assert db.execute("SELECT email, reason FROM email_suppressions ORDER BY email").fetchall() == [
        ("bounces@example.org", "bounce"), ("complains@example.org", "spam_report")
    ]
    assert db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
    targets, skipped = eligibility.eligible_email_targets(db, "req-loop", list(addresses))
    assert set(targets) == {3}
    assert skipped == {1: "email_suppressed", 2: "email_suppressed"}
