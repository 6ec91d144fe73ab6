"""What providers tell us about dead tokens and unwanted email, kept so we never repeat the mistake.

FCM's UNREGISTERED / invalid-token answers retire tokens; SendGrid's bounce, dropped, spam report and
unsubscribe events suppress addresses. Both are idempotent: retiring a retired token or suppressing a
suppressed address changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

Connection = psycopg.Connection[Any]

#: SendGrid events after which an address is never mailed again, and the reason recorded for each.
SUPPRESSING_EVENTS: Mapping[str, str] = {
    "bounce": "bounce",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "group_unsubscribe",
}

#: A stored event still waiting after this long lost its queue message; the next batch applies it.
ORPHAN_AFTER_SECONDS = 900


def retire_tokens(conn: Connection, tokens: Mapping[str, str]) -> int:
    """Retire push tokens the provider rejected (token → reason); returns how many were newly retired."""
    if not tokens:
        return 0
    cur = conn.execute(
        "UPDATE device_tokens AS t SET retired_at = now(), retired_reason = dead.reason"
        " FROM unnest(%s::text[], %s::text[]) AS dead(token, reason)"
        " WHERE t.token = dead.token AND t.retired_at IS NULL",
        (list(tokens.keys()), list(tokens.values())),
    )
    return cur.rowcount


def suppress_emails(conn: Connection, emails: Mapping[str, str]) -> int:
    """Never mail these addresses again (email → reason); returns how many were newly suppressed.

    Addresses are keyed in lower case, so a resident who retypes theirs in another case stays suppressed.
    The first reason recorded for an address is kept.
    """
    if not emails:
        return 0
    cur = conn.execute(
        "INSERT INTO email_suppressions (email, reason)"
        " SELECT lower(e.email), e.reason FROM unnest(%s::text[], %s::text[]) AS e(email, reason)"
        " ON CONFLICT (email) DO NOTHING",
        (list(emails.keys()), list(emails.values())),
    )
    return cur.rowcount


def _event_id(event: Mapping[str, Any]) -> str:
    """SendGrid's ``sg_event_id``; for an event without one, a digest of the event itself."""
    sg_event_id = event.get("sg_event_id")
    if isinstance(sg_event_id, str) and sg_event_id:
        return sg_event_id
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _occurred_at(event: Mapping[str, Any]) -> datetime | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and 0 < stamp < 2**33:
        return datetime.fromtimestamp(stamp, tz=UTC)
    return None


def is_suppressing(event: Mapping[str, Any]) -> bool:
    """Whether an event means "do not mail this address again".

    A ``bounce`` of type ``blocked`` is a temporary refusal by the receiving server (SendGrid itself does
    not suppress it), so only hard bounces count.
    """
    kind = event.get("event")
    if kind not in SUPPRESSING_EVENTS:
        return False
    if kind == "bounce" and event.get("type") == "blocked":
        return False
    email = event.get("email")
    return isinstance(email, str) and "@" in email


def record_webhook_events(conn: Connection, events: Iterable[Mapping[str, Any]]) -> tuple[str, int]:
    """Store the suppressing events of one verified webhook POST under a new batch id.

    Returns ``(batch_id, events in the batch)``. Other events (delivered, open, ...) are not kept: the
    engine needs nothing from them, and not storing an address is the best way to protect it. An event
    already waiting (a SendGrid retry, a replay) joins this batch, so a batch whose queue message was
    lost is picked up by the next one.
    """
    batch_id = uuid.uuid4().hex
    rows = [
        (_event_id(e), batch_id, str(e["event"]), str(e["email"]), _occurred_at(e))
        for e in events
        if is_suppressing(e)
    ]
    if not rows:
        return batch_id, 0
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO webhook_events AS w (sg_event_id, batch_id, event, email, occurred_at)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])"
            " ON CONFLICT (sg_event_id) DO UPDATE SET batch_id = EXCLUDED.batch_id",
            tuple(list(column) for column in zip(*rows, strict=True)),
        )
    return batch_id, cur.rowcount


def apply_webhook_events(conn: Connection, batch_id: str) -> int:
    """Suppress the addresses of one stored batch and delete its raw events; returns new suppressions.

    One statement: the events leave the inbox exactly when their suppressions are written. Events of
    any batch left waiting for longer than ``ORPHAN_AFTER_SECONDS`` (its queue message was lost) are
    applied too, so no address lingers in the inbox.
    """
    reasons = list(SUPPRESSING_EVENTS.items())
    cur = conn.execute(
        """
        WITH done AS (
            DELETE FROM webhook_events
            WHERE batch_id = %s OR received_at < now() - make_interval(secs => %s)
            RETURNING sg_event_id, event, email, occurred_at
        ), reasons AS (
            SELECT * FROM unnest(%s::text[], %s::text[]) AS r(event, reason)
        )
        INSERT INTO email_suppressions (email, reason, suppressed_at)
        SELECT DISTINCT ON (lower(d.email)) lower(d.email), r.reason, COALESCE(d.occurred_at, now())
        FROM done AS d JOIN reasons AS r USING (event)
        ORDER BY lower(d.email), d.occurred_at, d.sg_event_id
        ON CONFLICT (email) DO NOTHING
        """,
        (batch_id, ORPHAN_AFTER_SECONDS, [k for k, _ in reasons], [v for _, v in reasons]),
    )
    return cur.rowcount
