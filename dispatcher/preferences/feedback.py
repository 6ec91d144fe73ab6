"""What providers tell us about dead tokens and unwanted email, kept so we never repeat the mistake.

FCM's UNREGISTERED / invalid-token answers retire tokens; SendGrid's events suppress addresses as
:mod:`dispatcher.preferences.sendgrid_events` says (its docstring holds the table). Both are idempotent:
retiring a retired token or suppressing a suppressed address changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.errors

from dispatcher.db.types import Conn
from dispatcher.preferences.sendgrid_events import SUPPRESSION_REASONS, suppression_reason

logger = logging.getLogger(__name__)


#: A stored event still waiting after this long lost its queue message; the next batch applies it.
ORPHAN_AFTER_SECONDS = 900


def retire_tokens(conn: Conn, tokens: Mapping[str, str]) -> int:
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


def suppress_emails(conn: Conn, emails: Mapping[str, str]) -> int:
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


#: ``sg_event_id`` as SendGrid sends it (base64-like, short); anything else is replaced by a digest.
_SG_EVENT_ID = re.compile(r"[\x21-\x7e]{1,100}")
#: Failures of one stored event that no retry can cure: bad data (22), a broken constraint (23) or a size
#: limit (54). The event is quarantined; anything else (a lost connection) fails the batch, to be retried.
_UNAPPLICABLE = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.ProgramLimitExceeded)

_STORE_EVENTS = """
INSERT INTO webhook_events AS w (sg_event_id, batch_id, event, email, occurred_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
ON CONFLICT (sg_event_id) DO UPDATE SET batch_id = EXCLUDED.batch_id
"""

# One statement per batch: the events leave the inbox exactly when their suppressions are written.
_APPLY_BATCH = """
WITH done AS (
    DELETE FROM webhook_events
    WHERE batch_id = %(batch)s OR received_at < now() - make_interval(secs => %(orphan)s)
    RETURNING sg_event_id, event, email, occurred_at
), reasons AS (
    SELECT * FROM unnest(%(events)s::text[], %(reasons)s::text[]) AS r(event, reason)
)
INSERT INTO email_suppressions (email, reason, suppressed_at)
SELECT DISTINCT ON (lower(d.email)) lower(d.email), r.reason, COALESCE(d.occurred_at, now())
FROM done AS d JOIN reasons AS r USING (event)
ORDER BY lower(d.email), d.occurred_at, d.sg_event_id
ON CONFLICT (email) DO NOTHING
"""

#: The events ``_APPLY_BATCH`` would take, for applying them one by one after it failed.
_BATCH_EVENT_IDS = """
SELECT sg_event_id FROM webhook_events
WHERE batch_id = %(batch)s OR received_at < now() - make_interval(secs => %(orphan)s)
ORDER BY occurred_at, sg_event_id
"""

_APPLY_ONE = """
WITH done AS (
    DELETE FROM webhook_events WHERE sg_event_id = %(id)s
    RETURNING sg_event_id, event, email, occurred_at
), reasons AS (
    SELECT * FROM unnest(%(events)s::text[], %(reasons)s::text[]) AS r(event, reason)
)
INSERT INTO email_suppressions (email, reason, suppressed_at)
SELECT lower(d.email), r.reason, COALESCE(d.occurred_at, now())
FROM done AS d JOIN reasons AS r USING (event)
ON CONFLICT (email) DO NOTHING
"""

_QUARANTINE_ONE = """
WITH gone AS (
    DELETE FROM webhook_events WHERE sg_event_id = %(id)s RETURNING sg_event_id, event, received_at
)
INSERT INTO webhook_quarantine (sg_event_id, event, problem, received_at)
SELECT sg_event_id, event, %(problem)s, received_at FROM gone
ON CONFLICT (sg_event_id) DO UPDATE SET problem = EXCLUDED.problem, quarantined_at = now()
"""


def _event_id(event: Mapping[str, Any]) -> str:
    """SendGrid's ``sg_event_id``; for an event without a plausible one, a digest of the event itself."""
    sg_event_id = event.get("sg_event_id")
    if isinstance(sg_event_id, str) and _SG_EVENT_ID.fullmatch(sg_event_id):
        return sg_event_id
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _occurred_at(event: Mapping[str, Any]) -> datetime | None:
    stamp = event.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and 0 < stamp < 2**33:
        return datetime.fromtimestamp(stamp, tz=UTC)
    return None


def record_webhook_events(
    conn: Conn, events: Iterable[Mapping[str, Any]], *, unsubscribe_group: int = 0
) -> tuple[str, int]:
    """Store the suppressing events of one verified webhook POST under a new batch id.

    Returns ``(batch_id, events in the batch)``. Which events suppress is
    :func:`~dispatcher.preferences.sendgrid_events.suppression_reason`; other events (delivered, open,
    ...) are not kept: the engine needs nothing from them, and not storing an address is the best way
    to protect it. An event listed twice in the post is stored once; an event already waiting (a
    SendGrid retry, a replay) joins this batch, so a batch whose queue message was lost is picked up by
    the next one.
    """
    batch_id = uuid.uuid4().hex
    rows: dict[str, tuple[str, str, str, str, datetime | None]] = {}
    for e in events:
        if suppression_reason(e, unsubscribe_group) is not None:
            event_id = _event_id(e)
            rows.setdefault(event_id, (event_id, batch_id, str(e["event"]), str(e["email"]), _occurred_at(e)))
    if not rows:
        return batch_id, 0
    with conn.transaction():
        cur = conn.execute(_STORE_EVENTS, tuple(list(column) for column in zip(*rows.values(), strict=True)))
    return batch_id, cur.rowcount


def apply_webhook_events(conn: Conn, batch_id: str) -> int:
    """Suppress the addresses of one stored batch and delete its raw events; returns new suppressions.

    Events of any batch left waiting for longer than ``ORPHAN_AFTER_SECONDS`` (its queue message was
    lost) are applied too, so no address lingers in the inbox. When the batch cannot be applied as a
    whole, its events are applied one by one and each one that cannot be applied is moved, with the kind
    of failure and without its address, to ``webhook_quarantine``: one bad event never blocks the rest.
    """
    reasons = list(SUPPRESSION_REASONS.items())
    params = {"batch": batch_id, "orphan": ORPHAN_AFTER_SECONDS,
              "events": [k for k, _ in reasons], "reasons": [v for _, v in reasons]}
    try:
        with conn.transaction():
            return conn.execute(_APPLY_BATCH, params).rowcount
    except _UNAPPLICABLE:
        pass
    suppressed = 0
    for (event_id,) in conn.execute(_BATCH_EVENT_IDS, params).fetchall():
        try:
            with conn.transaction():
                suppressed += conn.execute(_APPLY_ONE, {**params, "id": event_id}).rowcount
        except _UNAPPLICABLE as error:
            problem = f"{type(error).__name__} (SQLSTATE {error.sqlstate})"
            with conn.transaction():
                conn.execute(_QUARANTINE_ONE, {"id": event_id, "problem": problem})
            logger.warning("sendgrid event %s quarantined: %s", event_id, problem)
    return suppressed
