"""Actors for the main application's messages about agencies and responses (on the "residents" queue).

``resident_responded`` carries ids, the answer and, only with the resident's consent, the contact details
they chose to share; it follows the residents queue's rules (:func:`dispatcher.preferences.actors.resident_actor`):
a malformed message is dropped at once and logged by ids, never retried into a dead letter.
``agency_updated`` carries one agency as a GeoJSON Feature (no resident data), guarded the same way;
an agency that joins is announced by ``announce_agency`` (on the requests queue, ids only).
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from dispatcher.agencies import announcements, registry, responses
from dispatcher.broker import get_engine_broker
from dispatcher.db import get_pool
from dispatcher.errors import InvalidAgency
from dispatcher.preferences.actors import _apply, resident_actor
from dispatcher.queues import REQUESTS_QUEUE

logger = logging.getLogger(__name__)

get_engine_broker()  # installed before the actors below bind to it

#: Version logged with a response (responses are not versioned: the latest answer wins).
_UNVERSIONED = 0


@resident_actor
def resident_responded(request_id: str, resident_id: int, response: str, contact_consent: bool = False,
                       contact: dict[str, Any] | None = None) -> None:
    """A resident shared, declined, or opted out of all future requests."""

    def apply(conn: Any) -> bool:
        answer = responses.parse_response(request_id, resident_id, response, contact_consent, contact)
        responses.record_response(conn, answer)
        return True

    _apply("resident_responded", resident_id, _UNVERSIONED, apply)


@resident_actor
def agency_updated(feature: dict[str, Any]) -> None:
    """An agency joined, changed its jurisdiction or left (``properties.active``)."""
    try:
        record = registry.parse_agency(feature, "agency_updated")
    except InvalidAgency as problem:
        logger.error("agency update dropped: %s", problem)
        return
    with get_pool().connection() as conn:
        joined = registry.upsert_agencies(conn, [record])
    logger.info("agency %s %s", record.id, "joined" if joined else "updated")
    for agency_id in joined:
        announce_agency.send(agency_id)


@dramatiq.actor(queue_name=REQUESTS_QUEUE, max_retries=20, min_backoff=1_000, max_backoff=60_000)
def announce_agency(agency_id: str) -> None:
    """Tell residents inside a joining agency's jurisdiction (ids only in the message)."""
    if not isinstance(agency_id, str) or not registry.AGENCY_ID.fullmatch(agency_id):
        logger.error("announce_agency message dropped: not an agency id")
        return
    from dispatcher.actors import start_fanout
    from dispatcher.pipeline import target

    with get_pool().connection() as conn:
        request_id = announcements.store_announcement(conn, agency_id)
    if request_id is None:
        return
    if target(request_id).start_fanout:
        start_fanout(request_id)
