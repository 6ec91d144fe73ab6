"""Residents' choices, honoured at the last moment.

Targeting already filtered residents when the request was matched; a fan-out worker asks again right
before it sends a batch, because between the two a resident may have switched off, left, lost their
last token or had their address bounce. One set-based query per batch answers who may be reached and,
for everyone else, why not: the reason goes into the ledger row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

import psycopg

from dispatcher.preferences.feedback import retire_tokens, suppress_emails

__all__ = [
    "EmailTarget",
    "PushRecipient",
    "eligible_email_targets",
    "eligible_push_targets",
    "retire_tokens",
    "suppress_emails",
]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

#: Why a resident is not reached (the ledger records these words).
RESIDENT_DELETED = "resident_deleted"
COMMUNITY_REQUESTS_OFF = "community_requests_off"
PUSH_OFF = "push_off"
EMAIL_OFF = "email_off"
NO_ACTIVE_TOKEN = "no_active_token"
NO_EMAIL = "no_email"
EMAIL_SUPPRESSED = "email_suppressed"


class PushRecipient(NamedTuple):
    """What a push needs about its recipient: their active tokens, newest first."""

    tokens: list[str]
    locale: str
    time_zone: str
    has_camera: bool


class EmailTarget(NamedTuple):
    """What an email needs about its recipient."""

    email: str
    locale: str
    time_zone: str
    has_camera: bool


_PUSH_SQL = f"""
SELECT q.id,
       CASE WHEN r.id IS NULL THEN '{RESIDENT_DELETED}'
            WHEN NOT COALESCE(s.community_requests, TRUE) THEN '{COMMUNITY_REQUESTS_OFF}'
            WHEN NOT COALESCE(s.push_enabled, TRUE) THEN '{PUSH_OFF}'
            WHEN t.tokens IS NULL THEN '{NO_ACTIVE_TOKEN}'
       END AS reason,
       t.tokens, r.locale, r.time_zone, r.has_camera
FROM (SELECT DISTINCT unnest(%s::bigint[]) AS id) AS q
LEFT JOIN residents AS r ON r.id = q.id
LEFT JOIN resident_settings AS s ON s.resident_id = q.id
LEFT JOIN LATERAL (
    SELECT array_agg(d.token ORDER BY d.registered_at DESC, d.token) AS tokens
    FROM device_tokens AS d
    WHERE d.resident_id = q.id AND d.retired_at IS NULL
) AS t ON r.id IS NOT NULL
"""

_EMAIL_SQL = f"""
SELECT q.id,
       CASE WHEN r.id IS NULL THEN '{RESIDENT_DELETED}'
            WHEN NOT COALESCE(s.community_requests, TRUE) THEN '{COMMUNITY_REQUESTS_OFF}'
            WHEN NOT COALESCE(s.email_enabled, TRUE) THEN '{EMAIL_OFF}'
            WHEN r.email IS NULL OR r.email = '' THEN '{NO_EMAIL}'
            WHEN EXISTS (SELECT 1 FROM email_suppressions AS x WHERE x.email = lower(r.email))
                 THEN '{EMAIL_SUPPRESSED}'
       END AS reason,
       r.email, r.locale, r.time_zone, r.has_camera
FROM (SELECT DISTINCT unnest(%s::bigint[]) AS id) AS q
LEFT JOIN residents AS r ON r.id = q.id
LEFT JOIN resident_settings AS s ON s.resident_id = q.id
"""


def eligible_push_targets(
    conn: Connection, request_id: str, resident_ids: Iterable[int]
) -> tuple[dict[int, PushRecipient], dict[int, str]]:
    """``(resident → PushRecipient, resident → reason not reached)`` for one push batch of a request."""
    targets: dict[int, PushRecipient] = {}
    skipped: dict[int, str] = {}
    for resident_id, reason, tokens, locale, time_zone, has_camera in conn.execute(
        _PUSH_SQL, (list(resident_ids),)
    ):
        if reason is None:
            targets[int(resident_id)] = PushRecipient(list(tokens), str(locale), str(time_zone), bool(has_camera))
        else:
            skipped[int(resident_id)] = str(reason)
    logger.debug("push eligibility for request %s: %d reachable, %d skipped",
                 request_id, len(targets), len(skipped))
    return targets, skipped


def eligible_email_targets(
    conn: Connection, request_id: str, resident_ids: Iterable[int]
) -> tuple[dict[int, EmailTarget], dict[int, str]]:
    """``(resident → EmailTarget, resident → reason not reached)`` for one email batch of a request."""
    targets: dict[int, EmailTarget] = {}
    skipped: dict[int, str] = {}
    for resident_id, reason, email, locale, time_zone, has_camera in conn.execute(
        _EMAIL_SQL, (list(resident_ids),)
    ):
        if reason is None:
            targets[int(resident_id)] = EmailTarget(str(email), str(locale), str(time_zone), bool(has_camera))
        else:
            skipped[int(resident_id)] = str(reason)
    logger.debug("email eligibility for request %s: %d reachable, %d skipped",
                 request_id, len(targets), len(skipped))
    return targets, skipped
