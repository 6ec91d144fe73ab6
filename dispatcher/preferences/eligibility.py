"""Who may be reached on which channel, and why not: the eligibility rules, in one place.

The rules are applied twice, with the same SQL: by targeting, when the ledger's rows are written
(:data:`TAKES_REQUESTS_SQL`, :data:`PUSH_REASON_SQL`, :data:`EMAIL_REASON_SQL` inside
:mod:`dispatcher.ledger`), and by a fan-out worker right before it sends a batch, because between the
two a resident may have switched off, left, lost their last token or had their address bounce. One
set-based query per batch answers who may be reached and, for everyone else, why not: the reason (one
of the constants below, the only spelling of each) goes into the ledger row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

from dispatcher.db.types import Conn
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

#: Why a resident is not reached (the ledger records these words).
RESIDENT_DELETED = "resident_deleted"
COMMUNITY_REQUESTS_OFF = "community_requests_off"
PUSH_OFF = "push_off"
EMAIL_OFF = "email_off"
NO_ACTIVE_TOKEN = "no_active_token"
NO_EMAIL = "no_email"
EMAIL_SUPPRESSED = "email_suppressed"
#: Per request kind (see :data:`AUDIENCE_REASON_SQL`).
OPTED_OUT_ALL_FUTURE = "opted_out_all_future"
VIDEO_REQUESTS_OFF = "video_requests_off"
NO_CAMERA = "no_camera"
SAFETY_ALERTS_OFF = "safety_alerts_off"
ANNOUNCEMENTS_OFF = "announcements_off"
#: An agency's announcement goes by push (and the app's feed), never by email.
PUSH_ONLY = "push_only"

# The rules as SQL over a resident ``r`` (``residents``) and their settings ``s`` (``resident_settings``,
# left-joined: a resident without a settings row has every default on).
#: The kind of the request ``{request_id}`` (a placeholder filled by the caller); stored requests from
#: before kinds existed are Community Requests.
REQUEST_KIND_SQL = ("(SELECT coalesce(c.payload->>'kind', 'community_request') FROM community_requests c"
                    " WHERE c.id = {request_id})")
_OPTED_OUT_SQL = "EXISTS (SELECT 1 FROM request_opt_outs o WHERE o.resident_id = r.id)"
#: Why the resident is not in the audience of the request's kind, or NULL when they are: a request
#: (community or video) never reaches who opted out of all future requests; a video request only
#: residents with cameras; a safety alert everyone with safety alerts on (it is not a request).
AUDIENCE_REASON_SQL = f"""CASE {REQUEST_KIND_SQL}
    WHEN 'safety_alert' THEN CASE WHEN NOT coalesce(s.safety_alerts, TRUE) THEN '{SAFETY_ALERTS_OFF}' END
    WHEN 'agency_announcement' THEN CASE WHEN NOT coalesce(s.announcements, TRUE) THEN '{ANNOUNCEMENTS_OFF}' END
    WHEN 'video_request' THEN CASE WHEN {_OPTED_OUT_SQL} THEN '{OPTED_OUT_ALL_FUTURE}'
                                   WHEN NOT coalesce(s.video_requests, TRUE) THEN '{VIDEO_REQUESTS_OFF}'
                                   WHEN NOT r.has_camera THEN '{NO_CAMERA}' END
    ELSE CASE WHEN {_OPTED_OUT_SQL} THEN '{OPTED_OUT_ALL_FUTURE}'
              WHEN NOT coalesce(s.community_requests, TRUE) THEN '{COMMUNITY_REQUESTS_OFF}' END
END"""
#: Whether the resident is in the request's audience at all (those who are not get no ledger row).
TAKES_REQUESTS_SQL = f"({AUDIENCE_REASON_SQL}) IS NULL"
#: Why push cannot reach the resident, or NULL when it can.
PUSH_REASON_SQL = f"""CASE WHEN NOT coalesce(s.push_enabled, TRUE) THEN '{PUSH_OFF}'
     WHEN NOT EXISTS (SELECT 1 FROM device_tokens d WHERE d.resident_id = r.id AND d.retired_at IS NULL)
          THEN '{NO_ACTIVE_TOKEN}'
END"""
#: Why email cannot reach the resident, or NULL when it can.
EMAIL_REASON_SQL = f"""CASE WHEN {REQUEST_KIND_SQL} = 'agency_announcement' THEN '{PUSH_ONLY}'
     WHEN NOT coalesce(s.email_enabled, TRUE) THEN '{EMAIL_OFF}'
     WHEN r.email IS NULL OR r.email = '' THEN '{NO_EMAIL}'
     WHEN EXISTS (SELECT 1 FROM email_suppressions x WHERE x.email = lower(r.email)) THEN '{EMAIL_SUPPRESSED}'
END"""


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
            ELSE coalesce({AUDIENCE_REASON_SQL}, {PUSH_REASON_SQL})
       END AS reason,
       t.tokens, r.locale, r.time_zone, r.has_camera
FROM (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS id) AS q
LEFT JOIN residents AS r ON r.id = q.id
LEFT JOIN resident_settings AS s ON s.resident_id = q.id
LEFT JOIN LATERAL (
    SELECT array_agg(d.token ORDER BY d.registered_at DESC, d.token) AS tokens
    FROM device_tokens AS d
    WHERE d.resident_id = q.id AND d.retired_at IS NULL
) AS t ON r.id IS NOT NULL
""".replace("{request_id}", "%(request_id)s")

_EMAIL_SQL = f"""
SELECT q.id,
       CASE WHEN r.id IS NULL THEN '{RESIDENT_DELETED}'
            ELSE coalesce({AUDIENCE_REASON_SQL}, {EMAIL_REASON_SQL})
       END AS reason,
       r.email, r.locale, r.time_zone, r.has_camera
FROM (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS id) AS q
LEFT JOIN residents AS r ON r.id = q.id
LEFT JOIN resident_settings AS s ON s.resident_id = q.id
""".replace("{request_id}", "%(request_id)s")


def eligible_push_targets(
    conn: Conn, request_id: str, resident_ids: Iterable[int]
) -> tuple[dict[int, PushRecipient], dict[int, str]]:
    """``(resident → PushRecipient, resident → reason not reached)`` for one push batch of a request."""
    targets: dict[int, PushRecipient] = {}
    skipped: dict[int, str] = {}
    for resident_id, reason, tokens, locale, time_zone, has_camera in conn.execute(
        _PUSH_SQL, {"ids": list(resident_ids), "request_id": request_id}
    ):
        if reason is None:
            targets[int(resident_id)] = PushRecipient(list(tokens), str(locale), str(time_zone), bool(has_camera))
        else:
            skipped[int(resident_id)] = str(reason)
    logger.debug("push eligibility for request %s: %d reachable, %d skipped",
                 request_id, len(targets), len(skipped))
    return targets, skipped


def eligible_email_targets(
    conn: Conn, request_id: str, resident_ids: Iterable[int]
) -> tuple[dict[int, EmailTarget], dict[int, str]]:
    """``(resident → EmailTarget, resident → reason not reached)`` for one email batch of a request."""
    targets: dict[int, EmailTarget] = {}
    skipped: dict[int, str] = {}
    for resident_id, reason, email, locale, time_zone, has_camera in conn.execute(
        _EMAIL_SQL, {"ids": list(resident_ids), "request_id": request_id}
    ):
        if reason is None:
            targets[int(resident_id)] = EmailTarget(str(email), str(locale), str(time_zone), bool(has_camera))
        else:
            skipped[int(resident_id)] = str(reason)
    logger.debug("email eligibility for request %s: %d reachable, %d skipped",
                 request_id, len(targets), len(skipped))
    return targets, skipped
