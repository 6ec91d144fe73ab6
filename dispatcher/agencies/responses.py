"""Residents' responses to requests, and the one view of them an agency gets.

The main application reports each response (actor ``resident_responded`` or ``POST /responses``):

- ``share``: recorded for the resident's own view; the agency sees the share under a "Neighbor #"
  pseudonym, with contact details only when the resident set ``contact_consent``;
- ``decline``: recorded for the resident's own view only;
- ``opt_out_all_future``: from now on no community or video request reaches the resident (safety alerts
  are not requests). It needs no per-delivery work: the eligibility rules check it when the ledger is
  written and again right before each send, so pending deliveries of other requests are skipped too.

What an agency can read is :func:`agency_shares` (and the map of agencies): the shares of its own
request, each as a pseudonym, a time and consented contact details. Nothing about who declined,
ignored or opted out, and no count of notified residents, leaves through it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from dispatcher.agencies.pseudonyms import key_for, pseudonym, pseudonym_keys
from dispatcher.config import Settings, get_settings
from dispatcher.contract import is_request_id
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidResponse

#: Fields of the contact details a consenting resident may share, and their longest length.
CONTACT_FIELDS = {"name": 200, "email": 254, "phone": 32}
_EMAIL = re.compile(r"^[^@\s<>\"\r\n]+@[^@\s<>\"\r\n]+\.[^@\s<>\"\r\n]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().\-]{1,30}$")
_RESIDENT_ID_MAX = 2**63 - 1


class ResponseKind(enum.StrEnum):
    """What a resident answered."""

    SHARE = "share"
    DECLINE = "decline"
    OPT_OUT_ALL_FUTURE = "opt_out_all_future"


@dataclass(frozen=True)
class ResidentResponse:
    """One checked response."""

    request_id: str
    resident_id: int
    response: ResponseKind
    contact_consent: bool = False
    contact: Mapping[str, str] | None = None


def parse_response(request_id: object, resident_id: object, response: object, contact_consent: object = False,
                   contact: object = None) -> ResidentResponse:
    """A checked :class:`ResidentResponse`; :class:`InvalidResponse` names the bad field (never its value)."""
    if not is_request_id(request_id):
        raise InvalidResponse("request_id: not a request id")
    assert isinstance(request_id, str)
    if not isinstance(resident_id, int) or isinstance(resident_id, bool) or not 0 < resident_id <= _RESIDENT_ID_MAX:
        raise InvalidResponse("resident_id: must be a positive 64-bit integer")
    try:
        kind = ResponseKind(response) if isinstance(response, str) else None
    except ValueError:
        kind = None
    if kind is None:
        raise InvalidResponse("response: must be one of " + ", ".join(k.value for k in ResponseKind))
    if not isinstance(contact_consent, bool):
        raise InvalidResponse("contact_consent: must be true or false")
    checked = _contact(contact)
    if checked is not None and not (contact_consent and kind is ResponseKind.SHARE):
        raise InvalidResponse("contact: sent only with a share and contact_consent true")
    return ResidentResponse(request_id, resident_id, kind, contact_consent, checked)


def _contact(contact: object) -> dict[str, str] | None:
    if contact is None:
        return None
    if not isinstance(contact, Mapping) or not contact:
        raise InvalidResponse("contact: must be an object with name, email and/or phone")
    checked: dict[str, str] = {}
    for name, value in contact.items():
        if name not in CONTACT_FIELDS:
            raise InvalidResponse("contact: only name, email and phone may be shared")
        if not isinstance(value, str) or not value.strip() or len(value) > CONTACT_FIELDS[name]:
            raise InvalidResponse(f"contact.{name}: must be a non-empty string of at most "
                                  f"{CONTACT_FIELDS[name]} characters")
        if (name == "email" and not _EMAIL.match(value)) or (name == "phone" and not _PHONE.match(value)):
            raise InvalidResponse(f"contact.{name}: not a valid {name}")
        checked[name] = value.strip()
    return checked


_REQUEST = """
SELECT payload->'agency'->>'id', coalesce(payload->>'kind', 'community_request'), respond_until > now()
FROM community_requests WHERE id = %s
"""
_FIRST_KEY = """
SELECT rr.key_id FROM request_responses rr JOIN community_requests c ON c.id = rr.request_id
WHERE rr.resident_id = %s AND rr.response = 'share' AND rr.key_id IS NOT NULL
  AND c.payload->'agency'->>'id' = %s
ORDER BY rr.responded_at, rr.request_id
"""
_UPSERT = """
INSERT INTO request_responses (request_id, resident_id, response, contact_consent, contact, key_id)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (request_id, resident_id) DO UPDATE
SET response = excluded.response, contact_consent = excluded.contact_consent, contact = excluded.contact,
    key_id = coalesce(request_responses.key_id, excluded.key_id), responded_at = now()
"""


def record_response(conn: Conn, answer: ResidentResponse, settings: Settings | None = None) -> None:
    """Record one response (idempotent: the latest answer to a request is the one kept)."""
    if answer.response is ResponseKind.OPT_OUT_ALL_FUTURE:
        conn.execute("INSERT INTO request_opt_outs (resident_id) VALUES (%s) ON CONFLICT DO NOTHING",
                     (answer.resident_id,))
        return
    row = conn.execute(_REQUEST, (answer.request_id,)).fetchone()
    if row is None:
        raise InvalidResponse("request_id: no such request", status=404)
    agency_id, kind, open_ = str(row[0]), str(row[1]), bool(row[2])
    if kind == "safety_alert":
        raise InvalidResponse("request_id: a safety alert takes no response", status=409)
    if not open_:
        raise InvalidResponse("request_id: the response window of this request has ended", status=409)
    if conn.execute("SELECT 1 FROM residents WHERE id = %s", (answer.resident_id,)).fetchone() is None:
        raise InvalidResponse("resident_id: no such resident", status=404)
    key_id = None
    if answer.response is ResponseKind.SHARE:
        first = conn.execute(_FIRST_KEY, (answer.resident_id, agency_id)).fetchone()
        key_id = key_for(pseudonym_keys(settings or get_settings()), first[0] if first else None).id
    conn.execute(_UPSERT, (answer.request_id, answer.resident_id, answer.response.value, answer.contact_consent,
                           Jsonb(dict(answer.contact)) if answer.contact else None, key_id))


def opt_back_in(conn: Conn, resident_id: int) -> bool:
    """The resident takes requests again (their settings screen); whether they had opted out."""
    return conn.execute("DELETE FROM request_opt_outs WHERE resident_id = %s", (resident_id,)).rowcount > 0


def resident_responses(conn: Conn, resident_id: int) -> dict[str, Any]:
    """The resident's own view: their answers and whether they opted out of all future requests."""
    answers = [
        {"request_id": request_id, "response": response, "contact_consent": consent,
         "responded_at": responded_at.isoformat()}
        for request_id, response, consent, responded_at in conn.execute(
            "SELECT request_id, response, contact_consent, responded_at FROM request_responses"
            " WHERE resident_id = %s ORDER BY responded_at, request_id", (resident_id,))
    ]
    opted = conn.execute("SELECT 1 FROM request_opt_outs WHERE resident_id = %s", (resident_id,)).fetchone()
    return {"responses": answers, "opted_out_all_future": opted is not None}


def agency_shares(conn: Conn, agency_id: str, request_id: str, settings: Settings | None = None
                  ) -> list[dict[str, Any]]:
    """What the agency sees of its request's responses: shares only, as pseudonyms.

    Each entry is ``{"neighbor", "shared_at"}`` plus ``"contact"`` when the resident consented. Ordered by
    pseudonym, not by time or id, so the order tells nothing either. A request of another agency, or an
    unknown one, yields an error, never an empty list that would confirm or deny it.
    """
    row = conn.execute("SELECT payload->'agency'->>'id' FROM community_requests WHERE id = %s",
                       (request_id,)).fetchone()
    if row is None or row[0] != agency_id:
        raise InvalidResponse("request_id: no such request of this agency", status=404)
    keys = pseudonym_keys(settings or get_settings())
    shares: list[dict[str, Any]] = []
    for resident_id, key_id, consent, contact, shared_at in conn.execute(
        "SELECT resident_id, key_id, contact_consent, contact, responded_at FROM request_responses"
        " WHERE request_id = %s AND response = 'share'", (request_id,)
    ):
        entry: dict[str, Any] = {"neighbor": pseudonym(key_for(keys, key_id), agency_id, int(resident_id)),
                                 "shared_at": _minute(shared_at)}
        if consent and contact:
            entry["contact"] = dict(contact)
        shares.append(entry)
    return sorted(shares, key=lambda entry: str(entry["neighbor"]))


def _minute(moment: datetime) -> str:
    """A share's time to the minute: enough for an investigator, too coarse to line up with other logs."""
    return moment.replace(second=0, microsecond=0).isoformat()
