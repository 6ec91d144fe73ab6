"""Which SendGrid events suppress an address, following SendGrid's event semantics, and the quarantine of
a stored event that cannot be applied."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
import redis

from dispatcher.config import Settings
from dispatcher.db import get_pool
from dispatcher.preferences import feedback
from dispatcher.preferences.webhook import EventWebhookApp, create_app
from tests.webhook_posts import PRIVATE_KEY, event, post, public_key_text, signed

Conn = psycopg.Connection[Any]
OUR_GROUP = 4242

#: (event fields, reason the address is suppressed with, or None when it must stay mailable)
SEMANTICS: list[tuple[dict[str, Any], str | None]] = [
    ({"event": "bounce", "type": "bounce"}, "bounce"),
    ({"event": "bounce"}, "bounce"),
    ({"event": "bounce", "type": "blocked"}, None),
    ({"event": "spamreport"}, "spam_report"),
    ({"event": "unsubscribe"}, "unsubscribe"),
    ({"event": "group_unsubscribe", "asm_group_id": OUR_GROUP}, "group_unsubscribe"),
    ({"event": "group_unsubscribe", "asm_group_id": 7}, None),
    ({"event": "group_unsubscribe"}, None),
    ({"event": "dropped", "reason": "Bounced Address"}, "dropped"),
    ({"event": "dropped", "reason": "Unsubscribed Address"}, "dropped"),
    ({"event": "dropped", "reason": "Spam Reporting Address"}, "dropped"),
    ({"event": "dropped", "reason": "Invalid"}, "dropped"),
    ({"event": "dropped", "reason": "Spam Content (if Spam Checker app is enabled)"}, None),
    ({"event": "dropped", "reason": "Spam Content"}, None),
    ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
    ({"event": "dropped", "reason": "Recipient List over Package Quota"}, None),
    ({"event": "dropped"}, None),
    ({"event": "deferred"}, None),
    ({"event": "delivered"}, None),
    ({"event": "group_resubscribe", "asm_group_id": OUR_GROUP}, None),
]


@pytest.fixture
def webhook(settings: Settings, db: Conn, redis_client: redis.Redis) -> Iterator[EventWebhookApp]:
    dramatiq.get_broker().flush_all()
    yield create_app(settings.with_(sendgrid_webhook_public_key=public_key_text(PRIVATE_KEY),
                                    sendgrid_unsubscribe_group=OUR_GROUP))


@pytest.mark.parametrize(("fields", "reason"), SEMANTICS, ids=[str(sorted(f.items())) for f, _ in SEMANTICS])
def test_each_event_suppresses_exactly_what_sendgrid_means(
    webhook: EventWebhookApp, db: Conn, fields: dict[str, Any], reason: str | None
) -> None:
    payload, headers = signed([{**event("x", "someone@example.org", "ev-1"), **fields}])
    assert post(webhook, payload, headers).status_code == 200
    for (batch_id,) in db.execute("SELECT DISTINCT batch_id FROM webhook_events").fetchall():
        feedback.apply_webhook_events(db, str(batch_id))
    expected = [] if reason is None else [("someone@example.org", reason)]
    assert db.execute("SELECT email, reason FROM email_suppressions").fetchall() == expected


def test_without_an_unsubscribe_group_no_group_unsubscribe_is_ours(settings: Settings, db: Conn) -> None:
    app = create_app(settings.with_(sendgrid_webhook_public_key=public_key_text(PRIVATE_KEY),
                                    sendgrid_unsubscribe_group=0))
    payload, headers = signed([event("group_unsubscribe", "g@example.org", "ev-g", asm_group_id=0)])
    assert post(app, payload, headers).json()["kept"] == 0


@pytest.mark.parametrize("connection", ["autocommit", "worker pool"])
def test_an_event_that_cannot_be_applied_is_quarantined_and_the_rest_apply(
    webhook: EventWebhookApp, db: Conn, connection: str
) -> None:
    # Stored before intake bounded addresses: too large for the suppression index, it can never apply.
    unindexable = os.urandom(512 * 1024).hex() + "@example.org"
    db.execute("INSERT INTO webhook_events (sg_event_id, batch_id, event, email, received_at)"
               " VALUES ('ev-bad', 'old', 'bounce', %s, now() - interval '1 hour')", (unindexable,))
    payload, headers = signed([event("spamreport", "fine@example.org", "ev-fine")])
    assert post(webhook, payload, headers).status_code == 200
    (batch_id,) = db.execute("SELECT batch_id FROM webhook_events WHERE sg_event_id = 'ev-fine'").fetchone() or ("",)

    if connection == "worker pool":  # as the sendgrid_events actor runs it: one transaction, committed at the end
        with get_pool().connection() as conn:
            assert feedback.apply_webhook_events(conn, str(batch_id)) == 1
    else:
        assert feedback.apply_webhook_events(db, str(batch_id)) == 1

    assert db.execute("SELECT email FROM email_suppressions").fetchall() == [("fine@example.org",)]
    assert db.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)
    quarantined = db.execute("SELECT sg_event_id, event, problem FROM webhook_quarantine").fetchall()
    assert [(q[0], q[1]) for q in quarantined] == [("ev-bad", "bounce")]
    assert "ProgramLimitExceeded" in str(quarantined[0][2])
    # The quarantine keeps no address; later batches are not blocked.
    assert unindexable not in str(db.execute("SELECT * FROM webhook_quarantine").fetchall())
    payload, headers = signed([event("unsubscribe", "later@example.org", "ev-later")])
    assert post(webhook, payload, headers).status_code == 200
    (later,) = db.execute("SELECT batch_id FROM webhook_events").fetchone() or ("",)
    assert feedback.apply_webhook_events(db, str(later)) == 1
